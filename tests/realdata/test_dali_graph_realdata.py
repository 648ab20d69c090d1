"""The DALI graph on DALI's CPU operators on 64 development images: its decoder equals Pillow's and OpenCV's, and
the runner's originals, segmentations and mask fractions equal the NumPy path's."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from dali_support import SEG, needs_dali
from paths import development_files, require_dataset

from allbatch.input.decode import decode_rgb
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.segment import segment

pytestmark = [pytest.mark.realdata, *needs_dali]


def decode_with_dali(datas: list[bytes]) -> list[np.ndarray]:
    """The graph's ``decode`` node alone, on the CPU: (H, W, 3) uint8 RGB per encoded image."""
    from nvidia.dali import fn, pipeline_def, types

    from allbatch.prepare.dali.graph import decode

    @pipeline_def(batch_size=len(datas), num_threads=2, device_id=None, prefetch_queue_depth=1)
    def only_decode() -> Any:
        return decode(fn.external_source(name="encoded", batch=True, dtype=types.UINT8, ndim=1), "cpu")

    pipe = only_decode()
    pipe.build()
    (decoded,) = pipe.run(encoded=[np.frombuffer(d, dtype=np.uint8) for d in datas])
    return [np.asarray(decoded.at(i)) for i in range(len(datas))]


def test_cpu_decoder_equals_pillow_and_opencv_on_development_images() -> None:
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (dev extra) is a reference decoder")
    files = development_files(require_dataset())
    assert len(files) == 64
    datas = [path.read_bytes() for path in files]
    for path, data, dali_rgb in zip(files, datas, decode_with_dali(datas), strict=True):
        assert np.array_equal(dali_rgb, decode_rgb(data)), path.name
        assert np.array_equal(dali_rgb, cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]), path.name


def test_runner_matches_the_numpy_path_exactly_on_development_images() -> None:
    from allbatch.prepare.dali import pipeline_cache
    from allbatch.prepare.dali.pipeline import DaliRunner

    datas = [path.read_bytes() for path in development_files(require_dataset())]
    builds = pipeline_cache.stats().builds
    runner = DaliRunner(Preprocessing(), SEG, "cpu", max_batch=32, num_threads=2)
    for start in (0, 32):
        batch = runner.run(datas[start : start + 32])
        assert batch.original.shape == (32, 224, 224, 3) and batch.original.dtype == np.uint8
        for row, data in enumerate(datas[start : start + 32]):
            rgb = decode_rgb(data)
            ref_segmented, ref_mask = segment(rgb, SEG)
            assert np.array_equal(batch.original[row], rgb)  # 224 px: passed through, not resampled
            assert np.array_equal(batch.segmented[row], ref_segmented)
            assert batch.mask_pixels[row] == ref_mask.sum()
            assert batch.mask_fraction[row] == ref_mask.mean()
            assert tuple(batch.shapes[row]) == (224, 224, 3)
    assert pipeline_cache.stats().builds <= builds + 1 and runner.rebuilds == 0  # one pipeline (or one built earlier) ran both
