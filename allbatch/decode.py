"""CPU decode stage: encoded bytes -> (H, W, 3) uint8 RGB with Pillow, or a typed failure.

Every image mode becomes 8-bit RGB explicitly: grey, palette, alpha and CMYK through Pillow's
conversion; 16-bit and 32-bit integer grey by keeping the most significant 8 bits (Pillow's own
conversion would clip them to 255). EXIF orientation is applied, as OpenCV and nvJPEG do.
"""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from allbatch.status import ImageStatus

DEFAULT_MAX_PIXELS = 100_000_000
"""Images above 100 megapixels are refused (status too_large): memory stays bounded per image."""

_PILLOW_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    IndexError,
    TypeError,
    KeyError,
    ZeroDivisionError,
)
"""What Pillow's format plugins raise on malformed data (its parsers are not uniform about it)."""


class DecodeFailure(Exception):  # noqa: N818 - an outcome, not an error of allbatch
    """One image could not be decoded; carries the status to record. Internal to the decode stage."""

    def __init__(self, status: ImageStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _to_rgb8(image: Image.Image) -> npt.NDArray[np.uint8]:
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8)
    if mode.startswith("I;16") or mode == "I":
        wide = np.asarray(image).astype(np.uint32)
        bits = 16 if mode.startswith("I;16") or wide.max(initial=0) <= 0xFFFF else 32
        grey = (wide >> (bits - 8)).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        raise DecodeFailure(ImageStatus.UNSUPPORTED, "32-bit float images are not supported (no defined 8-bit scaling)")
    if mode in ("P", "PA") and "transparency" in image.info:
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def decode_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> npt.NDArray[np.uint8]:
    """Decode one image (first frame of multi-frame files).

    Args:
        data: the encoded file bytes.
        max_pixels: refuse larger images before decoding them.
    Returns:
        (H, W, 3) uint8 RGB, C-contiguous, host memory.
    Raises:
        DecodeFailure: with status decode_error, unsupported or too_large.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise DecodeFailure(ImageStatus.TOO_LARGE, f"{width}x{height} pixels exceeds the limit of {max_pixels}")
                image.load()
                rgb = _to_rgb8(ImageOps.exif_transpose(image) or image)
    except DecodeFailure:
        raise
    except Image.DecompressionBombError as exc:
        raise DecodeFailure(ImageStatus.TOO_LARGE, str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise DecodeFailure(ImageStatus.DECODE_ERROR, "not a recognised image format") from exc
    except MemoryError as exc:
        raise DecodeFailure(ImageStatus.TOO_LARGE, "not enough memory to decode") from exc
    except _PILLOW_DECODE_ERRORS as exc:
        raise DecodeFailure(ImageStatus.DECODE_ERROR, f"cannot decode: {exc}") from exc
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise DecodeFailure(ImageStatus.UNSUPPORTED, f"unexpected decoded shape {rgb.shape}")
    return np.ascontiguousarray(rgb)
