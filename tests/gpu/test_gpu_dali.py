"""The DALI graph on the GPU (mixed decoder, GPU arithmetic) and the GPU preparer; skipped without DALI or CUDA
(the CuPy assembly alone is tested in test_gpu_cupy.py, which needs no DALI).

Tolerances: nvJPEG may decode JPEGs a few levels away from libjpeg-turbo, so GPU vs CPU comparisons of
decoded pixels use DALI's own decoder-consistency bound (mean absolute difference <= 4 levels per
image). Everything downstream of the decoder is compared exactly against the NumPy reference fed with
the GPU's own decoded pixels: segmentation, mask fraction and the assembled float32/float16 input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dali_support import HAS_DALI, cuda_reason, every_colour
from image_factory import encode, smear_like, write_bad_files
from paths import development_files, require_dataset

from allbatch.core.records import EncodedImage
from allbatch.core.status import ImageStatus
from allbatch.input.discover import discover
from allbatch.input.read import read_encoded
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.segment import SegmentationParams, segment

_NO_CUDA = cuda_reason()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.dali,
    pytest.mark.skipif(not HAS_DALI, reason="nvidia-dali is not installed"),
    pytest.mark.skipif(_NO_CUDA is not None, reason=f"needs a CUDA GPU with CuPy: {_NO_CUDA}"),
]

SEG = SegmentationParams()
DECODE_MEAN_LEVELS = 4.0
"""nvJPEG vs libjpeg-turbo, mean |difference| per image in 8-bit levels (DALI's own consistency bound)."""


def encoded(datas: list[bytes]) -> list[EncodedImage]:
    return [EncodedImage(i, f"img{i:03d}", data, "") for i, data in enumerate(datas)]


def gpu_runner(prep: Preprocessing, max_batch: int) -> Any:
    from allbatch.prepare.dali.pipeline import DaliRunner

    return DaliRunner(prep, SEG, "gpu", max_batch=max_batch, num_threads=2, device_id=0)


def to_host(array: Any) -> np.ndarray:
    import cupy

    return cupy.asnumpy(array)


@pytest.mark.realdata
def test_mixed_decoder_is_close_to_the_cpu_decoder_and_the_rest_is_exact() -> None:
    import cupy

    from allbatch.prepare.dali.pipeline import DaliRunner

    datas = [path.read_bytes() for path in development_files(require_dataset())]
    gpu = gpu_runner(Preprocessing(), 64).run(datas)
    cpu = DaliRunner(Preprocessing(), SEG, "cpu", max_batch=64).run(datas)
    assert isinstance(gpu.original, cupy.ndarray) and gpu.original.shape == (64, 224, 224, 3)
    original, segmented = to_host(gpu.original), to_host(gpu.segmented)
    for row in range(64):
        diff = np.abs(original[row].astype(np.int16) - cpu.original[row])
        assert diff.mean() <= DECODE_MEAN_LEVELS, (row, diff.mean(), diff.max())
        ref_segmented, ref_mask = segment(original[row], SEG)  # the GPU's own pixels: exact from here on
        assert np.array_equal(segmented[row], ref_segmented), row
        assert gpu.mask_fraction[row] == ref_mask.mean()


def test_gpu_segmentation_is_exact_on_every_8bit_colour() -> None:
    tiles = every_colour(16)
    datas = [encode(tile, "PNG", compress_level=1) for tile in tiles]  # lossless: decoded pixels are the tile
    batch = gpu_runner(Preprocessing(size=1024), 16).run(datas)  # 1024 px: no resize
    original, segmented = to_host(batch.original), to_host(batch.segmented)
    for row, tile in enumerate(tiles):
        ref_segmented, ref_mask = segment(tile, SEG)
        assert np.array_equal(original[row], tile)
        assert np.array_equal(segmented[row], ref_segmented), row
        assert batch.mask_pixels[row] == ref_mask.sum()


def test_gpu_preparer_matches_the_cpu_preparer(tmp_path: Path) -> None:
    import cupy

    from allbatch.prepare.dali.preparer import DaliPreparer

    write_bad_files(tmp_path / "bad")
    for seed in range(10):
        (tmp_path / f"good{seed}.png").write_bytes(encode(smear_like(seed), "PNG"))
        (tmp_path / f"good{seed}.jpg").write_bytes(encode(smear_like(seed + 50), "JPEG", quality=90))
    prep = Preprocessing(blank_bottom_fraction=48 / 224)
    results = {}
    for device in ("gpu", "cpu"):
        images = [read_encoded(i, item) for i, item in enumerate(discover(tmp_path))]
        preparer = DaliPreparer(prep, SEG, device=device, max_batch=8)  # type: ignore[arg-type]
        results[device] = preparer.prepare(images)
        preparer.close()
    gpu, cpu = results["gpu"], results["cpu"]
    assert [i.status for i in gpu.images] == [i.status for i in cpu.images]
    assert isinstance(gpu.inputs, cupy.ndarray) and gpu.inputs.device.id == 0 and gpu.inputs.dtype == np.float32
    host = to_host(gpu.inputs)
    assert host.shape == cpu.inputs.shape
    levels = np.abs(host - cpu.inputs) * 255 * prep.std
    assert levels.mean() <= DECODE_MEAN_LEVELS
    pngs = [
        row for row, p in enumerate(gpu.ok_positions) if gpu.images[p].relpath.startswith("good") and gpu.images[p].relpath.endswith(".png")
    ]
    assert np.array_equal(host[pngs], cpu.inputs[pngs])  # lossless files at model size: exact


def test_gpu_bisect_isolates_a_file_that_only_the_decoder_rejects() -> None:
    from allbatch.prepare.dali.preparer import DaliPreparer

    datas = [encode(smear_like(seed), "PNG") for seed in range(9)]
    broken = bytearray(datas[5])
    start = broken.index(b"IDAT") + 20
    for k in range(start, start + 180):
        broken[k] ^= 0x5A
    datas[5] = bytes(broken)
    preparer = DaliPreparer(Preprocessing(), SEG, device="gpu", max_batch=9)
    batch = preparer.prepare(encoded(datas))
    assert [i for i, image in enumerate(batch.images) if image.status != ImageStatus.OK] == [5]
    assert batch.images[5].status == ImageStatus.DECODE_ERROR
    assert batch.images[5].error.startswith("DALI could not decode the image")
    host = to_host(batch.inputs)
    assert host.shape[0] == 8
    from allbatch.prepare.assemble import assemble_pair

    for row, position in enumerate(batch.ok_positions):
        image = smear_like(position)
        assert np.array_equal(host[row], assemble_pair(np, image[None], segment(image, SEG)[0][None], Preprocessing())[0])


def test_prepared_inputs_are_complete_for_another_stream() -> None:
    import cupy

    from allbatch.prepare.dali.preparer import DaliPreparer

    datas = [encode(smear_like(seed), "PNG") for seed in range(16)]
    preparer = DaliPreparer(Preprocessing(), SEG, device="gpu", max_batch=16)
    for _ in range(3):
        batch = preparer.prepare(encoded(datas))
        other = cupy.cuda.Stream(non_blocking=True)
        with other:  # the consumer's stream, with no wait on the preparer's
            total = float(batch.inputs.astype(cupy.float64).sum())
        other.synchronize()
        assert total == pytest.approx(float(np.float64(to_host(batch.inputs).astype(np.float64).sum())))
    preparer.close()
