"""DaliPreparer on DALI's CPU operators on 64 development images: the Pillow/NumPy path's rows, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from dali_support import SEG, dali_cpu_preparer, encoded, needs_dali, recipe_reference
from paths import development_files, require_dataset

from allbatch.core.status import ImageStatus
from allbatch.prepare.cpu import PillowPreparer
from allbatch.prepare.preprocessing import Preprocessing

pytestmark = [pytest.mark.realdata, *needs_dali]


@pytest.mark.parametrize("band", [0.0, 48 / 224])
def test_equals_the_pillow_path_exactly_on_development_images(band: float) -> None:
    prep = Preprocessing(blank_bottom_fraction=band)
    datas = [path.read_bytes() for path in development_files(require_dataset())]
    preparer = dali_cpu_preparer(prep, max_batch=32)
    batch = preparer.prepare(encoded(datas))
    preparer.close()
    assert isinstance(batch.inputs, np.ndarray) and batch.inputs.dtype == np.float32
    assert batch.inputs.shape == (64, 2, 3, 224, 224)
    assert all(image.status == ImageStatus.OK for image in batch.images)
    for row, data in enumerate(datas):
        pair, fraction = recipe_reference(data, prep)
        assert np.array_equal(batch.inputs[row], pair), row  # tolerance 0
        assert batch.mask_fraction[row] == np.float32(fraction)
    pillow = PillowPreparer(prep, SEG, threads=1)
    cpu = pillow.prepare(encoded(datas))
    pillow.close()
    assert np.array_equal(batch.inputs, cpu.inputs)
    assert np.array_equal(batch.mask_fraction, cpu.mask_fraction)
