"""Pure DALI graph-building functions: each takes DataNodes and returns DataNodes (no pipeline here).

Call them inside a ``@pipeline_def`` function (see ``dali_pipeline``). Every node runs on the device
of its input: after ``decode(..., "gpu")`` (the ``mixed`` decoder) the rest of the graph runs on the
GPU, after ``decode(..., "cpu")`` on the CPU, with identical arithmetic.

The HSV threshold reproduces OpenCV's 8-bit ``COLOR_RGB2HSV`` with its integer tables (12-bit fixed
point, see ``allbatch.segment``). DALI has no OpenCV-compatible HSV operator, so it is written with
DALI arithmetic on int32: the two division tables go through ``fn.lookup_table`` (entries below 2**24,
so exact in the operator's float table), and the rounding shifts become integer divisions. DALI's
integer division truncates towards zero, unlike OpenCV's arithmetic shift, so the hue numerator (the
only one that can be negative) is lifted by a multiple of 4096 first. The tests prove equality with
``allbatch.segment.segment`` on every 8-bit colour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from allbatch.segment import _HDIV, _HSV_SHIFT, _ROUND, _SDIV, SegmentationParams

if TYPE_CHECKING:
    from nvidia.dali.data_node import DataNode
else:
    DataNode = Any

Device = Literal["gpu", "cpu"]

_ONE = 1 << _HSV_SHIFT
_HUE_LIFT = 64
"""The hue numerator times its table entry is >= -255 * 122880 / 255 = -122880 > -64 * 4096, so adding
64 * 4096 makes it non-negative; truncation then equals the floor that OpenCV's ``>>`` computes."""


def decode(encoded: DataNode, device: Device) -> DataNode:
    """Encoded file bytes (1-D uint8 per sample, host) -> (H, W, 3) uint8 RGB, layout HWC.

    ``device="gpu"`` uses DALI's ``mixed`` decoder (nvJPEG / nvImageCodec, output on the GPU);
    ``device="cpu"`` decodes on the host (libjpeg-turbo for JPEG). EXIF orientation is applied.
    """
    from nvidia.dali import fn
    from nvidia.dali.types import DALIImageType

    return fn.decoders.image(encoded, device="mixed" if device == "gpu" else "cpu", output_type=DALIImageType.RGB)


def blank_bottom(rgb: DataNode, anchor: DataNode, rows: DataNode) -> DataNode:
    """Zero ``rows`` image rows starting at row ``anchor`` (the bottom band), per sample.

    Args:
        rgb: (H, W, 3) uint8 HWC.
        anchor, rows: 1-element float32 host inputs per sample (H - rows and rows); rows may be 0.
    Returns:
        (H, W, 3) uint8, the band set to 0 as ``allbatch.preprocess.blank_bottom_band`` does.
    """
    from nvidia.dali import fn

    return fn.erase(rgb, anchor=anchor, shape=rows, axis_names="H", fill_value=0)


def hsv_threshold(rgb: DataNode, params: SegmentationParams) -> tuple[DataNode, DataNode]:
    """The authors' segmentation, bit-exact with ``allbatch.segment.segment``.

    Args:
        rgb: (H, W, 3) uint8 RGB, HWC.
        params: thresholds; only ``channel_order="bgr_as_rgb"`` exists.
    Returns:
        segmented: (H, W, 3) uint8 HWC holding the masked (V, S, H) values.
        mask: (H, W) bool, True on the kept pixels.
    """
    if params.channel_order != "bgr_as_rgb":
        raise ValueError(f"unknown channel_order {params.channel_order!r}")
    import nvidia.dali.math as dmath
    from nvidia.dali import fn
    from nvidia.dali.types import DALIDataType

    # The authors passed BGR data to RGB2HSV, so OpenCV's "red" is our blue channel.
    red8, green8, blue8 = rgb[:, :, 2], rgb[:, :, 1], rgb[:, :, 0]
    value8 = dmath.max(dmath.max(red8, green8), blue8)
    diff8 = value8 - dmath.min(dmath.min(red8, green8), blue8)  # uint8, never negative
    keys = list(range(256))
    sdiv = fn.lookup_table(value8, keys=keys, values=[float(x) for x in _SDIV], dtype=DALIDataType.INT32)
    hdiv = fn.lookup_table(diff8, keys=keys, values=[float(x) for x in _HDIV], dtype=DALIDataType.INT32)
    red, green, blue, value, diff = (fn.cast(node, dtype=DALIDataType.INT32) for node in (red8, green8, blue8, value8, diff8))

    saturation = (diff * sdiv + _ROUND) // _ONE  # non-negative: truncation is OpenCV's shift
    # OpenCV's branch-free hue: the first maximum among (red, green) picks the formula.
    is_red = value == red
    is_green = (value == green) & (value != red)
    is_blue = (value != green) & (value != red)
    numerator = is_red * (green - blue) + is_green * (blue - red + 2 * diff) + is_blue * (red - green + 4 * diff)
    hue = (numerator * hdiv + (_ROUND + _HUE_LIFT * _ONE)) // _ONE - _HUE_LIFT
    hue = hue + 180 * (hue < 0)

    mask = (
        (hue >= params.h_min)
        & (hue <= params.h_max)
        & (saturation >= params.s_min)
        & (saturation <= params.s_max)
        & (value >= params.v_min)
        & (value <= params.v_max)
    )
    planes = [mask * plane for plane in (value, saturation, hue)]
    segmented = fn.cast(fn.stack(*planes, axis=2, axis_name="C"), dtype=DALIDataType.UINT8)
    return segmented, mask


def mask_pixel_count(mask: DataNode) -> DataNode:
    """(H, W) bool -> scalar uint64: the number of kept pixels.

    A count, not ``fn.reductions.mean``: DALI's mean accumulates in float32, while the CPU path's
    ``mask.mean()`` is exact; count / (H * W) on the host reproduces it bit for bit.
    """
    from nvidia.dali import fn
    from nvidia.dali.types import DALIDataType

    return fn.reductions.sum(fn.cast(mask, dtype=DALIDataType.UINT8), dtype=DALIDataType.UINT64)


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
