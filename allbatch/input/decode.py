"""CPU decode stage: encoded bytes -> (H, W, 3) uint8 RGB with Pillow, or a typed failure.

Every image mode becomes 8-bit RGB explicitly: grey, palette, alpha and CMYK through Pillow's
conversion; 16-bit and 32-bit integer grey by keeping the most significant 8 bits (Pillow's own
conversion would clip them to 255). EXIF orientation is applied, as OpenCV and nvJPEG do.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from allbatch.core.status import ImageStatus
from allbatch.input.image_check import DEFAULT_MAX_PIXELS, PILLOW_DECODE_ERRORS, DecodeFailure, check_image

__all__ = ["DEFAULT_MAX_PIXELS", "DecodeFailure", "decode_rgb", "decode_rgb_simple_upsampling"]


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
        DecodeFailure: with status empty, decode_error, unsupported or too_large (``check_image``
            first, then whatever Pillow refuses while decoding).
    """
    header = check_image(data, max_pixels)  # the shared acceptance rule (same as the DALI path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[header.pillow_format]) as image:
                image.load()
                rgb = _to_rgb8(ImageOps.exif_transpose(image) or image)
    except DecodeFailure:
        raise
    except Image.DecompressionBombError as exc:
        raise DecodeFailure(ImageStatus.TOO_LARGE, str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise DecodeFailure(ImageStatus.DECODE_ERROR, "not a recognised image format") from exc
    except MemoryError as exc:
        raise DecodeFailure(ImageStatus.TOO_LARGE, f"not enough memory to decode {header.width}x{header.height} pixels") from exc
    except PILLOW_DECODE_ERRORS as exc:
        raise DecodeFailure(ImageStatus.DECODE_ERROR, f"cannot decode: {exc}") from exc
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise DecodeFailure(ImageStatus.UNSUPPORTED, f"unexpected decoded shape {rgb.shape}")
    return np.ascontiguousarray(rgb)


def decode_rgb_simple_upsampling(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> npt.NDArray[np.uint8]:
    """Decode a JPEG as the GPU path's nvJPEG does: libjpeg-turbo with its simple chroma upsampling
    (``simplejpeg``, ``fastupsample=True``) instead of the "fancy" filter of Pillow and DALI's CPU decoder.

    For measuring (and training) a model's invariance to the decoder: the two upsamplings differ by a level
    or two at colour edges of 4:2:0 JPEGs, and on an H200 this decode reproduced the GPU path's label on all
    16 of 768 development images whose label differed from the CPU path's. Other formats have no subsampled
    chroma and decode as ``decode_rgb``; the EXIF orientation is applied as there.

    Returns:
        (H, W, 3) uint8 RGB, C-contiguous, host memory.
    Raises:
        DecodeFailure: as ``decode_rgb``.
    """
    header = check_image(data, max_pixels)
    if header.format != "jpeg" or header.mode != "RGB":
        return decode_rgb(data, max_pixels)
    import simplejpeg  # a core dependency (the JPEG check); imported here as image_check does

    pixels = Image.fromarray(simplejpeg.decode_jpeg(data, colorspace="RGB", fastupsample=True))
    with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
        pixels.info["exif"] = image.getexif().tobytes()  # the file's orientation, for exif_transpose as decode_rgb
    return np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(pixels)))
