"""Development images for issue 22 on DALI's CPU operators: the pipeline is built once per process, batches run ahead without changing
a row, a file DALI rejects costs one extra run of its batch and no rebuild, and the decoder's
``jpeg_fancy_upsampling`` reproduces the CPU path's (Pillow) decode."""

from __future__ import annotations

import numpy as np
import pytest
from dali_support import dali_cpu_preparer, encoded, needs_dali
from paths import development_files, require_dataset

from allbatch.prepare.cpu import PillowPreparer
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.segment import SegmentationParams

pytestmark = needs_dali

SEG = SegmentationParams()


@pytest.mark.realdata
def test_batches_started_ahead_equal_the_serial_cpu_preparer() -> None:
    datas = [path.read_bytes() for path in development_files(require_dataset(), count=48)]
    prep = Preprocessing(blank_bottom_fraction=48 / 224)
    batches = [datas[k : k + 12] for k in range(0, 48, 12)]
    preparer = dali_cpu_preparer(prep, max_batch=8, prefetch_depth=2)  # 12 images: two DALI runs per batch
    pending = [preparer.start(encoded(batch, 12 * k)) for k, batch in enumerate(batches)]  # all four under way
    assert preparer.runner.in_flight <= 2  # at most prefetch_depth runs ahead; the rest waits collected
    got = [preparer.finish(p) for p in pending]
    preparer.close()
    pillow = PillowPreparer(prep, SEG, threads=1)
    for k, batch in enumerate(batches):
        expected = pillow.prepare(encoded(batch, 12 * k))
        assert [image.relpath for image in got[k].images] == [image.relpath for image in expected.images]
        assert np.array_equal(got[k].inputs, expected.inputs)  # bit for bit, in order
        assert np.array_equal(got[k].mask_fraction, expected.mask_fraction)
    pillow.close()


@pytest.mark.realdata
def test_the_decoder_with_fancy_upsampling_decodes_as_the_cpu_path() -> None:
    """``jpeg_fancy_upsampling`` is set in the graph; DALI's decoder with it gives Pillow's pixels exactly on
    4:2:0 development JPEGs, while nvJPEG's default (simple) chroma upsampling would not."""
    from allbatch.input.decode import decode_rgb, decode_rgb_simple_upsampling
    from allbatch.prepare.dali.pipeline import DaliRunner, build_pipeline

    prep = Preprocessing()
    assert b"jpeg_fancy_upsampling" in build_pipeline(4, "cpu", SEG, prep, 1, None, fancy_upsampling=True).serialize()
    datas = [path.read_bytes() for path in development_files(require_dataset(), count=16)]
    runner = DaliRunner(prep, SEG, "cpu", max_batch=16, num_threads=1, fancy_upsampling=True)
    batch = runner.run(datas)
    runner.close()
    differs = 0
    for row, data in enumerate(datas):
        assert np.array_equal(batch.original[row], decode_rgb(data))  # the CPU path's decode, bit for bit
        differs += int(not np.array_equal(decode_rgb_simple_upsampling(data), decode_rgb(data)))
    assert differs == len(datas)  # simple upsampling (nvJPEG without the flag) gives other pixels on every image
