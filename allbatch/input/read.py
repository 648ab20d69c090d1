"""Read stage: a file's bytes, their sha256 and the file's stat, or the reason it could not be read."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from allbatch.core.records import EncodedImage, FileStat
from allbatch.core.status import ImageStatus
from allbatch.input.discover import DiscoveredFile
from allbatch.input.image_check import DecodeFailure, max_plausible_bytes, read_header

MAX_FILE_BYTES = 512 * 1024 * 1024
"""Files above this are refused (status too_large) so that one file cannot exhaust host memory."""
HEAD_BYTES = 1 << 20
"""Files larger than 16 x this have their header read first, so an implausible size is refused unread."""
RACY_NS = 2_000_000_000
"""A file modified (mtime or ctime) less than this before it was read may change again within the same
timestamp tick: its recorded mtime is -1 so that a resume re-hashes it (git's "racily clean" rule)."""


def file_stat(path: Path) -> FileStat:
    """Size, mtime_ns and ctime_ns of ``path`` (following links); raises OSError."""
    info = os.stat(path)
    racy = time.time_ns() - max(info.st_mtime_ns, info.st_ctime_ns) < RACY_NS
    return FileStat(info.st_size, info.st_mtime_ns, info.st_ctime_ns, racy)


def encoded_from_bytes(index: int, relpath: str, data: bytes, stat: FileStat | None = None) -> EncodedImage:
    """An EncodedImage for bytes already in memory (sha256 computed here; empty data is status empty)."""
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return EncodedImage(index, relpath, None, digest, ImageStatus.EMPTY, "file is empty (0 bytes)", stat)
    return EncodedImage(index, relpath, data, digest, stat=stat)


def read_encoded(index: int, item: DiscoveredFile, max_bytes: int = MAX_FILE_BYTES, stat: FileStat | None = None) -> EncodedImage:
    """Read one discovered file into host memory; never raises for a bad file.

    ``stat`` is the file's stat when the caller already took it (taken before the bytes are read, so a
    file changed in between is re-hashed by the next resume). A file much larger than its header's
    image can be (``max_plausible_bytes``) is refused after reading its first MiB, not all of it.
    """
    if item.problem is not None:
        return EncodedImage(index, item.relpath, None, "", ImageStatus.UNREADABLE, item.problem)
    try:
        stat = stat or file_stat(item.path)
        if stat.size > max_bytes:
            return EncodedImage(index, item.relpath, None, "", ImageStatus.TOO_LARGE, f"file is {stat.size} bytes, limit {max_bytes}", stat)
        with item.path.open("rb") as handle:
            head = handle.read(HEAD_BYTES) if stat.size > 16 * HEAD_BYTES else b""
            refusal = _implausible(head, stat.size) if head else None
            if refusal is not None:
                return EncodedImage(index, item.relpath, None, "", ImageStatus.DECODE_ERROR, refusal, stat)
            data = head + handle.read()
    except OSError as exc:
        return EncodedImage(index, item.relpath, None, "", ImageStatus.UNREADABLE, f"cannot read file: {exc.strerror or exc}", stat)
    return encoded_from_bytes(index, item.relpath, data, stat)


def _implausible(head: bytes, size: int) -> str | None:
    """Why a file of ``size`` bytes starting with ``head`` cannot be the image its header describes."""
    try:
        header = read_header(head)
    except DecodeFailure:
        return None  # the header needs more than the head, or is bad: the decoders decide on the whole file
    if size <= max_plausible_bytes(header):
        return None
    return f"{size} bytes is more than a {header.width}x{header.height} image holds (padding or appended data); not read"
