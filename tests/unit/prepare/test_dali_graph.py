"""The DALI graph on DALI's CPU operators: bit-exact segmentation, band, resize, runner (decode parity and the
runner on the development images: tests/realdata/test_dali_graph_realdata.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from dali_support import every_colour, needs_dali, run_raw_graph
from image_factory import encode, smear_like

from allbatch.prepare.preprocessing import Preprocessing, blank_bottom_band, resize_rgb
from allbatch.prepare.segment import SegmentationParams, segment

pytestmark = needs_dali

SEG = SegmentationParams()


def segment_graph(params: SegmentationParams) -> Any:
    from allbatch.prepare.dali.graph import hsv_threshold, mask_pixel_count

    def build(node: Any) -> Any:
        segmented, mask = hsv_threshold(node, params)
        return segmented, mask, mask_pixel_count(mask)

    return build


def test_segmentation_equals_segment_on_every_8bit_colour() -> None:
    tiles = every_colour(16)  # 16 samples of 1024 x 1024: every (R, G, B) once
    segmented, mask, count = run_raw_graph(list(tiles), segment_graph(SEG))
    kept = 0
    for i, tile in enumerate(tiles):
        ref_segmented, ref_mask = segment(tile, SEG)
        assert np.array_equal(np.asarray(mask.at(i)), ref_mask), i
        assert np.array_equal(np.asarray(segmented.at(i)), ref_segmented), i
        assert int(count.at(i)) == int(ref_mask.sum())
        kept += int(ref_mask.sum())
    assert 0 < kept < (1 << 24)  # the threshold is exercised on both sides


def test_segmentation_follows_other_thresholds() -> None:
    levels = np.arange(0, 256, 5, dtype=np.uint8)
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    cube = np.stack([r, g, b], axis=-1).reshape(-1, levels.size, 3)
    for params in (
        SegmentationParams(h_min=0, h_max=20, s_min=0, s_max=120, v_min=200, v_max=255),
        SegmentationParams(h_min=90, h_max=150, s_min=30, s_max=200, v_min=0, v_max=100),
    ):
        segmented, mask, _ = run_raw_graph([cube], segment_graph(params))
        ref_segmented, ref_mask = segment(cube, params)
        assert 0 < ref_mask.mean() < 1
        assert np.array_equal(np.asarray(mask.at(0)), ref_mask)
        assert np.array_equal(np.asarray(segmented.at(0)), ref_segmented)


def test_unknown_channel_order_is_refused() -> None:
    from allbatch.prepare.dali.graph import hsv_threshold

    with pytest.raises(ValueError, match="channel_order"):
        hsv_threshold(None, SegmentationParams(channel_order="rgb"))


@pytest.mark.parametrize("fraction", [48 / 224, 0.5, 0.25, 1.0])
def test_bottom_band_is_blanked_like_preprocess(fraction: float) -> None:
    from allbatch.prepare.dali.pipeline import DaliRunner

    prep = Preprocessing(size=64, blank_bottom_fraction=fraction)
    heights = [1, 2, 6, 7, 64, 97, 224]  # 0.5 * odd heights and 0.25 * 2, 6 hit Python's round-half-even
    images = [smear_like(seed, (height, 64)) for seed, height in enumerate(heights)]
    runner = DaliRunner(prep, SEG, "cpu", max_batch=len(images))
    batch = runner.run([encode(image, "PNG") for image in images], heights)
    for row, image in enumerate(images):
        blanked = blank_bottom_band(image, prep)
        ref_segmented, ref_mask = segment(blanked, SEG)
        if image.shape[0] == 64:
            assert np.array_equal(batch.original[row], blanked)
            assert np.array_equal(batch.segmented[row], ref_segmented)
        assert batch.mask_fraction[row] == ref_mask.mean(), image.shape


def test_band_needs_heights() -> None:
    from allbatch.prepare.dali.pipeline import DaliRunner

    runner = DaliRunner(Preprocessing(blank_bottom_fraction=0.2), SEG, "cpu", max_batch=2)
    with pytest.raises(ValueError, match="height"):
        runner.run([encode(smear_like(0), "PNG")])


RESIZE_MEAN_LEVELS = 0.25
RESIZE_MAX_LEVELS = 24
"""DALI's antialiased linear resize vs Pillow's bilinear, in 8-bit levels (measured: mean <= 0.18,
max 18 at the sharp edges of the synthetic blobs). Sizes equal to the model's are exact."""


def test_model_size_passes_unchanged_and_other_sizes_resize_like_pillow() -> None:
    from allbatch.prepare.dali.pipeline import DaliRunner

    shapes = [(224, 224), (300, 400), (100, 150), (224, 300), (223, 224), (500, 500), (1536, 2048)]
    images = [smear_like(seed, shape) for seed, shape in enumerate(shapes)]
    images[0] = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)  # any resampling would show
    runner = DaliRunner(Preprocessing(), SEG, "cpu", max_batch=len(images))
    batch = runner.run([encode(image, "PNG") for image in images])
    assert np.array_equal(batch.original[0], images[0])
    assert np.array_equal(batch.segmented[0], segment(images[0], SEG)[0])
    for row, image in enumerate(images[1:], start=1):
        ref_segmented, ref_mask = segment(image, SEG)
        for ours, ref in ((batch.original[row], resize_rgb(image, 224)), (batch.segmented[row], resize_rgb(ref_segmented, 224))):
            diff = np.abs(ours.astype(np.int16) - ref)
            assert diff.mean() <= RESIZE_MEAN_LEVELS and diff.max() <= RESIZE_MAX_LEVELS, (image.shape, diff.mean(), diff.max())
        assert batch.mask_fraction[row] == ref_mask.mean()  # native resolution: exact whatever the resize


def test_variable_batches_map_rows_to_inputs() -> None:
    from allbatch.prepare.dali.pipeline import DaliRunner

    images = [smear_like(seed, (224, 224)) for seed in range(7)]
    datas = [encode(image, "PNG") for image in images]
    runner = DaliRunner(Preprocessing(), SEG, "cpu", max_batch=4)
    rows = []
    for chunk in (datas[0:4], datas[4:7], datas[6:7]):
        batch = runner.run(chunk)
        assert batch.original.shape[0] == len(chunk)
        rows.extend(batch.original)
    assert all(np.array_equal(row, image) for row, image in zip(rows, [*images, images[6]], strict=True))
    with pytest.raises(ValueError, match=r"1\.\.4"):
        runner.run(datas[:5])
    with pytest.raises(ValueError, match=r"1\.\.4"):
        runner.run([])


def test_build_pipeline_checks_device_arguments() -> None:
    from allbatch.prepare.dali.pipeline import build_pipeline

    prep = Preprocessing()
    with pytest.raises(ValueError, match="device_id=None"):
        build_pipeline(2, "cpu", SEG, prep, 1, 0)
    with pytest.raises(ValueError, match="needs a device_id"):
        build_pipeline(2, "gpu", SEG, prep, 1, None)
    with pytest.raises(ValueError, match="'gpu' or 'cpu'"):
        build_pipeline(2, "tpu", SEG, prep, 1, None)  # type: ignore[arg-type]


@pytest.mark.parametrize("band", [0.0, 48 / 224])
def test_gpu_graph_is_defined_here_and_fails_only_for_want_of_cuda(band: float) -> None:
    """The GPU graph (mixed decoder, every later node on the GPU) is defined on this CPU machine: DALI checks
    operator placement while the graph is defined (a GPU node as a named argument, a GPU input to a CPU
    operator, an unknown argument raise there), so the only error left is the missing CUDA device, raised when
    the backend pipeline is created. On a GPU machine the same build succeeds."""
    from dali_support import cuda_reason

    from allbatch.prepare.dali.pipeline import build_pipeline

    prep = Preprocessing(blank_bottom_fraction=band)
    if cuda_reason() is None:
        assert build_pipeline(64, "gpu", SEG, prep, 2, 0) is not None
        return
    with pytest.raises(RuntimeError, match="create a GPU DALI pipeline while CUDA is not available"):
        build_pipeline(64, "gpu", SEG, prep, 2, 0)


def test_a_placement_mistake_fails_before_the_cuda_check() -> None:
    """What the test above relies on: a misplaced node fails at definition, with another message."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=2, num_threads=1, device_id=0, prefetch_queue_depth=1)
    def misplaced() -> Any:
        encoded = fn.external_source(name="encoded", batch=True, dtype=types.UINT8, ndim=1)
        rgb = fn.decoders.image(encoded, device="mixed")  # on the GPU from here on
        row = fn.cast(rgb, dtype=types.FLOAT)[0, 0]
        return fn.erase(rgb, anchor=row, shape=row, axis_names="H")  # GPU data as a named argument

    with pytest.raises(ValueError, match="Named arguments must be on CPU"):
        misplaced().build()
