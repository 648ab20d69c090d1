"""Keep one bad file from failing a DALI batch: header pre-validation, then a bisecting retry.

DALI cannot skip a sample that fails to decode (DALI issue 3913): the whole batch raises. So:

1. ``check_header`` refuses the obvious failures on the host before the batch is built (empty data,
   unknown or unsupported format, a JPEG cut before its end-of-image marker, a header that does not
   parse, more pixels than the limit) and returns the image's size for the rest.
2. ``run_isolating`` runs a batch through any ``run(list) -> result`` callable; when it raises an
   error that belongs to an item (``is_item_error``), the batch is split in halves and each half is
   run again, down to single items, which are reported with their error. Every item ends up in
   exactly one successful chunk or in the failures, in input order.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from PIL import Image, UnidentifiedImageError

from allbatch.decode import _PILLOW_DECODE_ERRORS, DEFAULT_MAX_PIXELS, DecodeFailure
from allbatch.status import ImageStatus

log = logging.getLogger("allbatch.gpu.isolation")

T = TypeVar("T")
R = TypeVar("R")

DALI_FORMATS = frozenset({"jpeg", "png", "tiff", "bmp", "jpeg2000", "webp", "pnm"})
"""Formats DALI's image decoder reads on both the CPU and the GPU."""

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
)
_PNM = re.compile(rb"P[1-6]\s")
_EXIF_ORIENTATION = 0x0112
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_JPEG_SOS = b"\xff\xda"
_JPEG_EOI = b"\xff\xd9"


@dataclass(frozen=True)
class Header:
    """What the header says: format name and the size after EXIF orientation (pixels)."""

    format: str
    height: int
    width: int


def sniff_format(data: bytes) -> str | None:
    """The container format from the magic bytes ("jpeg", "png", ...), or None when unknown."""
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if _PNM.match(data[:3]):
        return "pnm"
    return None


def _jpeg_complete(data: bytes) -> bool:
    """True when an end-of-image marker follows the last start-of-scan marker.

    Entropy-coded data never holds 0xFFD9 (0xFF is stuffed), so a file cut inside or after its last
    scan has no EOI after that scan's SOS.
    """
    last_scan = data.rfind(_JPEG_SOS)
    return last_scan >= 0 and data.find(_JPEG_EOI, last_scan + 2) >= 0


def _pillow_size(data: bytes) -> tuple[int, int, int]:
    """(width, height, EXIF orientation) from the header alone (Pillow opens lazily, decodes nothing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            # Pillow's PNG getexif() decodes the whole image when no eXIf chunk came before IDAT: skip it.
            has_exif = image.format != "PNG" or "exif" in image.info
            orientation = int(image.getexif().get(_EXIF_ORIENTATION, 1)) if has_exif else 1
    return width, height, orientation


def check_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """Cheap checks before DALI sees a file; messages match the CPU decode stage where they overlap.

    Raises:
        DecodeFailure: status empty, decode_error, unsupported or too_large.
    """
    if not data:
        raise DecodeFailure(ImageStatus.EMPTY, "file is empty (0 bytes)")
    kind = sniff_format(data)
    if kind is None:
        raise DecodeFailure(ImageStatus.DECODE_ERROR, "not a recognised image format")
    if kind not in DALI_FORMATS:
        raise DecodeFailure(ImageStatus.UNSUPPORTED, f"{kind.upper()} is not decoded by DALI (use --decoder cpu)")
    if kind == "jpeg" and not _jpeg_complete(data):
        raise DecodeFailure(ImageStatus.DECODE_ERROR, "truncated JPEG: no end-of-image marker after the last scan")
    try:
        width, height, orientation = _pillow_size(data)
    except Image.DecompressionBombError as exc:
        raise DecodeFailure(ImageStatus.TOO_LARGE, str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise DecodeFailure(ImageStatus.DECODE_ERROR, f"unreadable {kind} header") from exc
    except _PILLOW_DECODE_ERRORS as exc:
        raise DecodeFailure(ImageStatus.DECODE_ERROR, f"unreadable {kind} header: {exc}") from exc
    if width * height > max_pixels:
        raise DecodeFailure(ImageStatus.TOO_LARGE, f"{width}x{height} pixels exceeds the limit of {max_pixels}")
    if width == 0 or height == 0:
        raise DecodeFailure(ImageStatus.DECODE_ERROR, f"header claims {width}x{height} pixels")
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return Header(kind, height, width)


@dataclass
class Isolated(Generic[R]):
    """The outcome of ``run_isolating``.

    chunks: (positions into the items, run's result for exactly those items), in input order.
    failures: position -> the error that item raised when run alone.
    runs: how many times ``run`` was called.
    """

    chunks: list[tuple[list[int], R]] = field(default_factory=list)
    failures: dict[int, Exception] = field(default_factory=dict)
    runs: int = 0


def run_isolating(items: Sequence[T], run: Callable[[list[T]], R], is_item_error: Callable[[Exception], bool]) -> Isolated[R]:
    """Run ``items`` as one batch; on an item error bisect until the failing items stand alone.

    Args:
        items: the batch (may be empty).
        run: processes a non-empty list of items, all or nothing; it must be usable again after raising
            (the DALI runner rebuilds its pipeline).
        is_item_error: True for errors a bad item can cause (bisecting helps); anything else is re-raised
            at once, so an out-of-memory or a bug is never turned into per-image statuses.
    Returns:
        the successful chunks and the isolated failures; together they cover every position once.
    """
    outcome: Isolated[R] = Isolated()

    def attempt(positions: list[int]) -> None:
        outcome.runs += 1
        try:
            result = run([items[p] for p in positions])
        except Exception as exc:
            if not is_item_error(exc):
                raise
            if len(positions) == 1:
                outcome.failures[positions[0]] = exc
                return
            log.debug("batch of %d failed (%s); bisecting", len(positions), exc)
            half = len(positions) // 2
            attempt(positions[:half])
            attempt(positions[half:])
            return
        outcome.chunks.append((positions, result))

    if items:
        attempt(list(range(len(items))))
    return outcome


_DALI_OPERATOR = re.compile(r"Error in (?:CPU|GPU|MIXED) operator `([^`]+)`", re.IGNORECASE)
_DALI_DETAIL = re.compile(r"encountered:\s*(.+?)(?:\nC\+\+ context|\nCurrent pipeline object|\Z)", re.DOTALL)
_DECODER_OPERATORS = ("nvidia.dali.fn.decoders.image",)


def dali_failed_operator(exc: Exception) -> str | None:
    """The DALI operator named in a pipeline error (e.g. "nvidia.dali.fn.decoders.image"), if any."""
    match = _DALI_OPERATOR.search(str(exc))
    return match.group(1) if match else None


def is_decode_error(exc: Exception) -> bool:
    """True for a DALI error raised by the image decoder, the only operator a bad file makes fail."""
    return isinstance(exc, RuntimeError) and dali_failed_operator(exc) in _DECODER_OPERATORS


def dali_error_message(exc: Exception) -> str:
    """A one-line message from a DALI pipeline error, without its traceback or sample index."""
    text = str(exc)
    match = _DALI_DETAIL.search(text)
    detail = match.group(1) if match else text
    detail = re.sub(r"\s*sample #\d+\s*:?", " sample", " ".join(detail.split())).strip(" :")
    return f"DALI could not decode the image: {detail}" if detail else "DALI could not decode the image"
