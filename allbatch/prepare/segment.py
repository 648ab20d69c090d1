"""The authors' HSV colour-threshold segmentation, bit-exact with their OpenCV pipeline, in NumPy.

Their code (see the dataset's PROVENANCE.md) read the image with ``cv2.imread`` (BGR order), converted
it with ``COLOR_RGB2HSV`` (so OpenCV took blue for red), kept pixels with H in 168..182, S >= 50 and
V >= 50 (``inRange``), zeroed the rest of the HSV array (``bitwise_and``) and wrote that array as a
JPEG, so a segmented image holds masked (V, S, H) in its R, G, B channels. This module reproduces the
8-bit OpenCV arithmetic exactly (integer tables with a 12-bit shift), so masks are identical, not close.

Where OpenCV is installed (the ``openvino``, ``robust``, ``train`` and ``dev`` extras) ``segment`` calls it
instead of the NumPy port: the same arithmetic (tests compare both on every 8-bit colour and every
development image), about five times faster, which matters on a CPU where decoding shares the cores with
the network. The NumPy port stays the definition that needs no optional package.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

_HSV_SHIFT = 12
_ROUND = 1 << (_HSV_SHIFT - 1)
_DIVISORS = np.arange(256, dtype=np.float64)
with np.errstate(divide="ignore"):
    # OpenCV's sdiv_table / hdiv_table180: saturate_cast<int>(x) rounds to nearest; entry 0 is 0.
    _SDIV = np.where(_DIVISORS > 0, np.rint((255 << _HSV_SHIFT) / _DIVISORS), 0).astype(np.int32)
    _HDIV = np.where(_DIVISORS > 0, np.rint((180 << _HSV_SHIFT) / (6.0 * _DIVISORS)), 0).astype(np.int32)


@dataclass(frozen=True)
class SegmentationParams:
    """Thresholds of the authors' ``cv2.inRange`` call (8-bit OpenCV HSV: H 0..179, S and V 0..255).

    ``channel_order="bgr_as_rgb"`` reproduces their reading of BGR data with the RGB2HSV constant.
    """

    h_min: int = 168
    h_max: int = 182  # inert above 179, kept because it is the authors' value
    s_min: int = 50
    s_max: int = 255
    v_min: int = 50
    v_max: int = 255
    channel_order: str = "bgr_as_rgb"
    mode: str = "hsv_threshold_ghaderzadeh2022"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentationParams:
        return cls(**data)


def opencv_rgb2hsv(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """``cv2.cvtColor(x, cv2.COLOR_RGB2HSV)`` for 8-bit input, bit-exact.

    Args:
        rgb: (H, W, 3) uint8, host memory; channel 0 is taken as red, as OpenCV does.
    Returns:
        (H, W, 3) uint8 with H in 0..179, S and V in 0..255.
    """
    px = rgb.astype(np.int32)
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    v = np.maximum(np.maximum(r, g), b)
    diff = v - np.minimum(np.minimum(r, g), b)
    s = (diff * _SDIV[v] + _ROUND) >> _HSV_SHIFT
    # OpenCV's branch-free hue: the first maximum among (r, g) picks the formula.
    h = np.where(v == r, g - b, np.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * _HDIV[diff] + _ROUND) >> _HSV_SHIFT
    h = np.where(h < 0, h + 180, h)
    return np.stack([h, s, v], axis=-1).astype(np.uint8)


def threshold_mask(hsv: npt.NDArray[np.uint8], params: SegmentationParams) -> npt.NDArray[np.bool_]:
    """``cv2.inRange(hsv, lower, upper)`` as a boolean (H, W) mask."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    return (h >= params.h_min) & (h <= params.h_max) & (s >= params.s_min) & (s <= params.s_max) & (v >= params.v_min) & (v <= params.v_max)


STRIPE_PIXELS = 1 << 20
"""Pixels segmented at a time: the int32 temporaries of the HSV arithmetic (about 60 bytes a pixel)
stay near 64 MiB whatever the image size; the result is identical (the threshold is per pixel)."""


def segment(rgb: npt.NDArray[np.uint8], params: SegmentationParams) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
    """Segment one image at its native resolution, in row stripes of about ``STRIPE_PIXELS``.

    Args:
        rgb: (H, W, 3) uint8 RGB, host memory.
        params: the thresholds.
    Returns:
        segmented: (H, W, 3) uint8 holding the masked (V, S, H) values, i.e. what the authors'
            JPEG holds when read as RGB.
        mask: (H, W) bool, True on the segmented (blast-coloured) pixels.
    """
    if params.channel_order != "bgr_as_rgb":
        raise ValueError(f"unknown channel_order {params.channel_order!r}")
    height, width = rgb.shape[:2]
    segmented = np.empty_like(rgb, dtype=np.uint8)
    mask = np.empty((height, width), dtype=np.bool_)
    rows = max(1, STRIPE_PIXELS // max(1, width))
    cv2 = opencv()
    for top in range(0, height, rows):
        stripe = slice(top, top + rows)
        if cv2 is not None:
            _segment_stripe_opencv(cv2, np.ascontiguousarray(rgb[stripe]), params, segmented[stripe], mask[stripe])
        else:
            hsv = opencv_rgb2hsv(rgb[stripe, :, ::-1])
            mask[stripe] = threshold_mask(hsv, params)
            segmented[stripe] = np.where(mask[stripe][..., None], hsv[..., ::-1], np.uint8(0))
    return segmented, mask


@functools.cache
def opencv() -> ModuleType | None:
    """The ``cv2`` module when OpenCV is installed, else None (``segment`` then runs the NumPy port)."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _segment_stripe_opencv(
    cv2: ModuleType,
    rgb: npt.NDArray[np.uint8],
    params: SegmentationParams,
    segmented: npt.NDArray[np.uint8],
    mask: npt.NDArray[np.bool_],
) -> None:
    """The authors' three OpenCV calls on one C-contiguous (h, W, 3) RGB stripe, into ``segmented`` / ``mask``."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_BGR2HSV)  # BGR2HSV on RGB data takes blue for red: their RGB2HSV on BGR data
    inside = cv2.inRange(hsv, (params.h_min, params.s_min, params.v_min), (params.h_max, params.s_max, params.v_max))
    np.not_equal(inside, 0, out=mask)
    segmented[...] = cv2.bitwise_and(hsv, hsv, mask=inside)[..., ::-1]


def authors_mask(segmented_rgb: npt.NDArray[np.uint8], threshold: int = 150) -> npt.NDArray[np.bool_]:
    """The foreground of one of the authors' ``Segmented/`` JPEGs: channel sum above ``threshold``.

    The threshold drops the JPEG ringing halo around their masked regions.
    """
    return segmented_rgb.astype(np.int32).sum(axis=-1) > threshold


def mask_iou(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    """Intersection over union of two (H, W) masks; 1.0 when both are empty."""
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)
