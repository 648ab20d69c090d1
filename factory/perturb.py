"""Camera and stain changes of an (H, W, 3) uint8 RGB original, applied before segmentation.

Written once, used twice: the robustness suite (``evaluation.robustness``) applies each at a fixed
strength; training augmentation (``training.augment``) samples their strengths. Hue and saturation
are changed in OpenCV's float HSV space (hue in degrees; one 8-bit OpenCV hue unit is 2 degrees), blur
is OpenCV's Gaussian, resizing and JPEG are Pillow's (the decoder inference uses). OpenCV comes with
the ``train`` / ``robust`` extras and is imported when first needed.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from allbatch.core.errors import BackendUnavailableError
from allbatch.input.decode import decode_rgb

Rgb = npt.NDArray[np.uint8]


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise BackendUnavailableError("the robustness suite and training augmentation need OpenCV: pip install 'allbatch[robust]'") from exc
    return cv2


def hue_saturation(rgb: Rgb, hue_units: float = 0.0, saturation: float = 1.0) -> Rgb:
    """Shift hue by ``hue_units`` OpenCV 8-bit units (2 degrees each, wrapping) and scale saturation."""
    cv2 = _cv2()
    hsv = cv2.cvtColor(rgb.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_RGB2HSV)  # H 0..360, S, V 0..1
    hsv[..., 0] = np.mod(hsv[..., 0] + np.float32(2.0 * hue_units), np.float32(360.0))
    hsv[..., 1] = np.clip(hsv[..., 1] * np.float32(saturation), 0.0, 1.0)
    out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * np.float32(255.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def brightness(rgb: Rgb, factor: float) -> Rgb:
    """Multiply every channel by ``factor`` (exposure / lamp intensity), clipped to 0..255."""
    return np.clip(np.rint(rgb.astype(np.float32) * np.float32(factor)), 0, 255).astype(np.uint8)


def gamma(rgb: Rgb, exponent: float) -> Rgb:
    """``255 * (x / 255) ** exponent`` per channel; exponent > 1 darkens the mid-tones."""
    table = np.clip(np.rint(255.0 * (np.arange(256) / 255.0) ** exponent), 0, 255).astype(np.uint8)
    return table[rgb]


def channel_gains(rgb: Rgb, gains: npt.NDArray[np.float32]) -> Rgb:
    """Multiply R, G, B by ``gains`` (3,) (a stain / white-balance shift), clipped."""
    return np.clip(np.rint(rgb.astype(np.float32) * gains.astype(np.float32)), 0, 255).astype(np.uint8)


def gaussian_blur(rgb: Rgb, sigma: float) -> Rgb:
    """Gaussian blur with standard deviation ``sigma`` pixels (kernel size from sigma, reflected border)."""
    if sigma <= 0:
        return rgb
    return np.asarray(_cv2().GaussianBlur(rgb, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma)), dtype=np.uint8)


def jpeg(rgb: Rgb, quality: int) -> Rgb:
    """Encode as a baseline JPEG of ``quality`` (4:2:0) and decode it again as inference decodes."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=int(quality))
    return decode_rgb(buffer.getvalue())


def rescale(rgb: Rgb, factor: float, jpeg_quality: int | None = None) -> Rgb:
    """Resize by ``factor`` (bicubic, antialiased when shrinking), then optionally JPEG-encode as a camera does."""
    height, width = rgb.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    out = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC), dtype=np.uint8)
    return out if jpeg_quality is None else jpeg(out, jpeg_quality)
