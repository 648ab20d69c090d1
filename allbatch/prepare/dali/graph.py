"""Pure DALI graph-building functions: each takes DataNodes and returns DataNodes (no pipeline here).

Call them inside a ``@pipeline_def`` function (see ``dali_pipeline``). Every node runs on the device
of its input: after ``decode(..., "gpu")`` (the ``mixed`` decoder) the rest of the graph runs on the
GPU, after ``decode(..., "cpu")`` on the CPU, with identical arithmetic.

The HSV threshold reproduces OpenCV's 8-bit ``COLOR_RGB2HSV`` with its integer tables (12-bit fixed
point, see ``allbatch.prepare.segment``). DALI has no OpenCV-compatible HSV operator, so it is written with
DALI arithmetic: the two division tables, the threshold tests and the hue wrap-around go through
``fn.lookup_table`` (entries below 2**24, so exact in the operator's float table), and the rounding
shifts become integer divisions. DALI's
integer division truncates towards zero, unlike OpenCV's arithmetic shift, so the hue numerator (the
only one that can be negative) is lifted by a multiple of 4096 first. The tests prove equality with
``allbatch.prepare.segment.segment`` on every 8-bit colour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from allbatch.prepare.segment import _HDIV, _HSV_SHIFT, _ROUND, _SDIV, SegmentationParams

if TYPE_CHECKING:
    from nvidia.dali.data_node import DataNode
else:
    DataNode = Any

Device = Literal["gpu", "cpu"]

_ONE = 1 << _HSV_SHIFT
_HUE_LIFT = 64
"""The hue numerator times its table entry is >= -255 * 122880 / 255 = -122880 > -64 * 4096, so adding
64 * 4096 makes it non-negative; truncation then equals the floor that OpenCV's ``>>`` computes."""


def decode(encoded: DataNode, device: Device, fancy_upsampling: bool = True) -> DataNode:
    """Encoded file bytes (1-D uint8 per sample, host) -> (H, W, 3) uint8 RGB, layout HWC.

    ``device="gpu"`` uses DALI's ``mixed`` decoder (nvJPEG / nvImageCodec, output on the GPU);
    ``device="cpu"`` decodes on the host (libjpeg-turbo for JPEG). EXIF orientation is applied.

    ``fancy_upsampling`` sets the decoder's ``jpeg_fancy_upsampling``: the mixed decoder then upsamples
    subsampled JPEG chroma with libjpeg-turbo's "fancy" (triangular) filter, as the CPU decoders (DALI's and
    Pillow's, the CPU path) do; without it nvJPEG replicates chroma samples, the cause of the CPU/GPU label
    differences of issue 22. DALI's CPU decoder upsamples "fancy" either way.
    """
    from nvidia.dali import fn
    from nvidia.dali.types import DALIImageType

    return fn.decoders.image(
        encoded,
        device="mixed" if device == "gpu" else "cpu",
        output_type=DALIImageType.RGB,
        jpeg_fancy_upsampling=fancy_upsampling,
    )


def blank_bottom(rgb: DataNode, anchor: DataNode, rows: DataNode) -> DataNode:
    """Zero ``rows`` image rows starting at row ``anchor`` (the bottom band), per sample.

    Args:
        rgb: (H, W, 3) uint8 HWC.
        anchor, rows: 1-element float32 host inputs per sample (H - rows and rows); rows may be 0.
    Returns:
        (H, W, 3) uint8, the band set to 0 as ``allbatch.prepare.preprocessing.blank_bottom_band`` does.
    """
    from nvidia.dali import fn

    return fn.erase(rgb, anchor=anchor, shape=rows, axis_names="H", fill_value=0)


def _table(node: DataNode, values: list[int], dtype: Any) -> DataNode:
    """``values[node]`` per element through ``fn.lookup_table`` (keys 0..len(values) - 1; others map to 0).

    The operator stores its table as float; every value used here is below 2**24, so the result is exact.
    """
    from nvidia.dali import fn

    return fn.lookup_table(node, keys=list(range(len(values))), values=[float(v) for v in values], dtype=dtype)


def _in_range(low: int, high: int, size: int) -> list[int]:
    """A 0/1 table of ``size`` entries: 1 where low <= key <= high (one lookup instead of two compares and an and)."""
    return [int(low <= key <= high) for key in range(size)]


def hsv_threshold(rgb: DataNode, params: SegmentationParams) -> tuple[DataNode, DataNode]:
    """The authors' segmentation, bit-exact with ``allbatch.prepare.segment.segment``.

    Every node here is a full-resolution buffer, so the graph is written to need few of them (DALI runs
    each arithmetic operator as its own kernel with its own output; it does not fuse expressions):
    comparisons stay on uint8, and the threshold tests and the hue wrap-around are lookup tables.

    Args:
        rgb: (H, W, 3) uint8 RGB, HWC.
        params: thresholds; only ``channel_order="bgr_as_rgb"`` exists.
    Returns:
        segmented: (H, W, 3) uint8 HWC holding the masked (V, S, H) values.
        mask: (H, W) uint8, 1 on the kept pixels.
    """
    if params.channel_order != "bgr_as_rgb":
        raise ValueError(f"unknown channel_order {params.channel_order!r}")
    import nvidia.dali.math as dmath
    from nvidia.dali import fn
    from nvidia.dali.types import DALIDataType

    int32, uint8 = DALIDataType.INT32, DALIDataType.UINT8
    # The authors passed BGR data to RGB2HSV, so OpenCV's "red" is our blue channel.
    red8, green8, blue8 = rgb[:, :, 2], rgb[:, :, 1], rgb[:, :, 0]
    value8 = dmath.max(dmath.max(red8, green8), blue8)
    diff8 = value8 - dmath.min(dmath.min(red8, green8), blue8)  # uint8, never negative
    sdiv = _table(value8, [int(x) for x in _SDIV], int32)
    hdiv = _table(diff8, [int(x) for x in _HDIV], int32)
    # int32 (uint8 * int32), in 0..255; non-negative, so truncation is OpenCV's shift.
    saturation = fn.cast((diff8 * sdiv + _ROUND) // _ONE, dtype=uint8)
    # OpenCV's branch-free hue: the first maximum among (red, green) picks the formula (uint8 compares).
    not_red = value8 != red8
    is_green = (value8 == green8) & not_red
    is_blue = (value8 != green8) & not_red
    red, green, blue, diff = (fn.cast(node, dtype=int32) for node in (red8, green8, blue8, diff8))
    numerator = (value8 == red8) * (green - blue) + is_green * (blue - red + 2 * diff) + is_blue * (red - green + 4 * diff)
    lifted = (numerator * hdiv + (_ROUND + _HUE_LIFT * _ONE)) // _ONE  # hue + _HUE_LIFT, in 0 .. _HUE_LIFT + 180
    # Undo the lift and wrap negative hues (red sector) by 180, as OpenCV's `h += h < 0 ? 180 : 0`.
    hue = _table(lifted, [key - _HUE_LIFT + 180 * (key < _HUE_LIFT) for key in range(_HUE_LIFT + 181)], uint8)

    mask = (
        _table(hue, _in_range(params.h_min, params.h_max, 256), uint8)
        & _table(saturation, _in_range(params.s_min, params.s_max, 256), uint8)
        & _table(value8, _in_range(params.v_min, params.v_max, 256), uint8)
    )
    segmented = fn.stack(*(mask * plane for plane in (value8, saturation, hue)), axis=2, axis_name="C")  # uint8
    return segmented, mask


def mask_pixel_count(mask: DataNode) -> DataNode:
    """(H, W) uint8 0/1 -> scalar uint64: the number of kept pixels.

    A count, not ``fn.reductions.mean``: DALI's mean accumulates in float32, while the CPU path's
    ``mask.mean()`` is exact; count / (H * W) on the host reproduces it bit for bit.
    """
    from nvidia.dali import fn
    from nvidia.dali.types import DALIDataType

    return fn.reductions.sum(mask, dtype=DALIDataType.UINT64)


def resize_square(image: DataNode, size: int) -> DataNode:
    """(H, W, 3) uint8 -> (size, size, 3) uint8 with antialiased linear interpolation.

    Images already size x size are passed through untouched (as ``resize_rgb`` does), through a DALI
    conditional that splits the batch: the pipeline needs ``enable_conditionals=True``. This is exact
    by construction and skips DALI's resampling, which costs ~1 ms per 224 px image on the CPU even
    at scale 1.
    """
    from nvidia.dali import fn
    from nvidia.dali.types import DALIInterpType

    shape = image.shape(device="cpu")
    # No annotation on ``resized``: DALI's AutoGraph conversion of this ``if`` needs plain assignments.
    if (shape[0] == size) & (shape[1] == size):
        resized = image
    else:
        resized = fn.resize(image, size=[size, size], interp_type=DALIInterpType.INTERP_LINEAR, antialias=True)  # type: ignore[assignment]
    return resized


def native_shape(image: DataNode) -> DataNode:
    """(H, W, C) image -> its shape as a 3-element int64 tensor on the host (even for GPU images)."""
    return image.shape(device="cpu")
