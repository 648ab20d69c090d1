"""What allbatch accepts as an image: one rule, checked before either decoder sees the bytes.

Both decode paths (Pillow, ``--decoder cpu``; DALI, ``--decoder dali``/``dali-cpu``) call
``check_image`` first, so a file gets the same status whichever decoder runs. The rule:

1. The content (magic bytes, whatever the file is called) is JPEG, PNG, TIFF or BMP. Other formats
   that Pillow or DALI could open (EPS, which would start Ghostscript, GIF, WebP, JPEG 2000, PNM...)
   are ``unsupported``; unknown bytes are ``decode_error``.
2. The header parses with the one Pillow plugin of that format (no other plugin ever reads the file),
   claims at least 1x1 and at most ``max_pixels`` pixels (else ``too_large``), and a pixel mode both
   decoders turn into 8-bit RGB the same way (``SUPPORTED_MODES``; float images are ``unsupported``).
3. A JPEG ends with an end-of-image marker after its last scan, a PNG with its IEND chunk.
4. A JPEG's entropy-coded data decodes without a single libjpeg warning: truncated files, corrupt
   data, premature end of a segment, no scan data at all. libjpeg "recovers" from those by filling
   the rest of the image with grey, which the model would classify with confidence. The check is a
   strict decode at 1/8 scale (libjpeg-turbo via simplejpeg: full entropy decoding, 1/64 of the
   pixels), so a lying header costs milliseconds and a few bytes of memory, not the pixels it claims.

PNG, TIFF and BMP data past the header is checked by the decoders themselves (both refuse bad CRCs,
truncated streams and short strips); ``tests/test_fuzz_decoders.py`` holds both to the same statuses.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from allbatch.core.status import ImageStatus

DEFAULT_MAX_PIXELS = 100_000_000
"""Images above 100 megapixels are refused (status too_large): memory stays bounded per image."""

PILLOW_FORMATS = {"jpeg": "JPEG", "png": "PNG", "tiff": "TIFF", "bmp": "BMP"}
"""Supported content (sniffed name -> the only Pillow plugin allowed to open it)."""

SUPPORTED_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "I;16", "I;16B", "I;16L"})
"""Pillow pixel modes that both decoders turn into 8-bit RGB (grey, palette, alpha, CMYK, 16-bit grey)."""
UNSUPPORTED_MODES_BY_FORMAT = {"tiff": frozenset({"1"})}
"""Exceptions per format: DALI cannot decode bilevel TIFF (Pillow can); refused for both."""

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"BM", "bmp"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "jpeg2000"),
    (b"\xff\x4f\xff\x51", "jpeg2000"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"%!PS", "eps"),
    (b"\xc5\xd0\xd3\xc6", "eps"),
    (b"%PDF", "pdf"),
    (b"II+\x00", "bigtiff"),
    (b"MM\x00+", "bigtiff"),
)
_EXIF_ORIENTATION = 0x0112
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_JPEG_SOS = b"\xff\xda"
_JPEG_EOI = b"\xff\xd9"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"

PILLOW_DECODE_ERRORS = (
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
    """One image could not be decoded; carries the status to record. Internal to the decode stages."""

    def __init__(self, status: ImageStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ImageHeader:
    """What the header says: sniffed format, size after EXIF orientation (pixels), Pillow mode."""

    format: str
    height: int
    width: int
    mode: str = "RGB"

    @property
    def pillow_format(self) -> str:
        return PILLOW_FORMATS[self.format]


def sniff_format(data: bytes) -> str | None:
    """The container format from the magic bytes ("jpeg", "png", "eps", ...), or None when unknown."""
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if len(data) >= 3 and data[:1] == b"P" and data[1:2] in b"123456" and data[2:3].isspace():
        return "pnm"
    return None


def _jpeg_complete(data: bytes) -> bool:
    """True when an end-of-image marker follows the last start-of-scan marker.

    Entropy-coded data never holds 0xFFD9 (0xFF is stuffed), so a file cut inside or after its last
    scan has no EOI after that scan's SOS.
    """
    last_scan = data.rfind(_JPEG_SOS)
    return last_scan >= 0 and data.find(_JPEG_EOI, last_scan + 2) >= 0


def _check_jpeg_data(data: bytes) -> None:
    """Strict entropy decode at 1/8 scale; DecodeFailure on any libjpeg error or warning."""
    try:
        import simplejpeg
    except ImportError as exc:  # a core dependency; only a broken install lacks it
        raise ImportError("allbatch needs simplejpeg to validate JPEG files: pip install simplejpeg") from exc
    try:
        colorspace = simplejpeg.decode_jpeg_header(data)[2]
        # CMYK/YCCK data cannot be converted to grey by libjpeg; everything else decodes to grey
        # (the cheapest output: no colour conversion), still entropy-decoding every component.
        target = "CMYK" if colorspace in ("CMYK", "YCCK") else "GRAY"
        simplejpeg.decode_jpeg(data, colorspace=target, min_height=1, min_width=1, min_factor=8, strict=True)
    except (ValueError, RuntimeError) as exc:
        raise DecodeFailure(ImageStatus.DECODE_ERROR, f"JPEG decoder: {' '.join(str(exc).split())}") from exc


def _pillow_header(data: bytes, pillow_format: str) -> tuple[int, int, str, int]:
    """(width, height, mode, EXIF orientation) from the header alone (Pillow opens lazily)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data), formats=[pillow_format]) as image:
            width, height = image.size
            # Pillow's PNG getexif() decodes the whole image when no eXIf chunk came before IDAT: skip it.
            has_exif = image.format != "PNG" or "exif" in image.info
            orientation = int(image.getexif().get(_EXIF_ORIENTATION, 1)) if has_exif else 1
            return width, height, image.mode, orientation


def read_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageHeader:
    """Rule 1 and 2 (module docstring): format, header, size, pixel mode. Needs only the file's start.

    Returns:
        the header; height and width are after EXIF orientation.
    Raises:
        DecodeFailure: status empty, decode_error, unsupported or too_large, with a one-line message.
    """
    if not data:
        raise DecodeFailure(ImageStatus.EMPTY, "file is empty (0 bytes)")
    kind = sniff_format(data)
    if kind is None:
        raise DecodeFailure(ImageStatus.DECODE_ERROR, "not a recognised image format")
    if kind not in PILLOW_FORMATS:
        raise DecodeFailure(ImageStatus.UNSUPPORTED, f"{kind.upper()} content is not supported (allbatch reads JPEG, PNG, TIFF and BMP)")
    try:
        width, height, mode, orientation = _pillow_header(data, PILLOW_FORMATS[kind])
    except Image.DecompressionBombError as exc:
        raise DecodeFailure(ImageStatus.TOO_LARGE, str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise DecodeFailure(ImageStatus.DECODE_ERROR, f"unreadable {kind} header") from exc
    except PILLOW_DECODE_ERRORS as exc:
        raise DecodeFailure(ImageStatus.DECODE_ERROR, f"unreadable {kind} header: {exc}") from exc
    if width * height > max_pixels:
        raise DecodeFailure(ImageStatus.TOO_LARGE, f"{width}x{height} pixels exceeds the limit of {max_pixels}")
    if width <= 0 or height <= 0:
        raise DecodeFailure(ImageStatus.DECODE_ERROR, f"header claims {width}x{height} pixels")
    if mode not in SUPPORTED_MODES or mode in UNSUPPORTED_MODES_BY_FORMAT.get(kind, ()):
        raise DecodeFailure(
            ImageStatus.UNSUPPORTED, f"pixel mode {mode} is not supported in {kind.upper()} (8/16-bit grey, palette, RGB(A), CMYK)"
        )
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return ImageHeader(kind, height, width, mode)


def max_plausible_bytes(header: ImageHeader) -> int:
    """The largest file that can hold ``header``'s image: 8 bytes a pixel (16-bit RGBA, uncompressed)
    plus 16 MiB of metadata. A larger file is padding or appended data (or extra TIFF pages)."""
    return header.width * header.height * 8 + (16 << 20)


def check_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageHeader:
    """Apply the whole acceptance rule (module docstring) to one file's bytes.

    Returns:
        the header; height and width are after EXIF orientation.
    Raises:
        DecodeFailure: status empty, decode_error, unsupported or too_large, with a one-line message.
    """
    kind = sniff_format(data)
    if kind == "jpeg" and not _jpeg_complete(data):
        raise DecodeFailure(ImageStatus.DECODE_ERROR, "truncated JPEG: no end-of-image marker after the last scan")
    if kind == "png" and _PNG_IEND not in data:
        # Pillow stops reading at the last pixel row, libpng (DALI) wants the whole stream: refuse for both.
        raise DecodeFailure(ImageStatus.DECODE_ERROR, "truncated PNG: no IEND chunk")
    header = read_header(data, max_pixels)
    if len(data) > max_plausible_bytes(header):
        raise DecodeFailure(
            ImageStatus.DECODE_ERROR,
            f"{len(data)} bytes is more than a {header.width}x{header.height} image holds (padding or appended data)",
        )
    if kind == "jpeg":
        _check_jpeg_data(data)
    return header
