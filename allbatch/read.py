"""Read stage: a file's bytes and their sha256, or the reason it could not be read."""

from __future__ import annotations

import hashlib

from allbatch.discover import DiscoveredFile
from allbatch.records import EncodedImage
from allbatch.status import ImageStatus

MAX_FILE_BYTES = 512 * 1024 * 1024
"""Files above this are refused (status too_large) so that one file cannot exhaust host memory."""


def read_encoded(index: int, item: DiscoveredFile, max_bytes: int = MAX_FILE_BYTES) -> EncodedImage:
    """Read one discovered file into host memory; never raises for a bad file."""
    if item.problem is not None:
        return EncodedImage(index, item.relpath, None, "", ImageStatus.UNREADABLE, item.problem)
    try:
        size = item.path.stat().st_size
        if size > max_bytes:
            return EncodedImage(index, item.relpath, None, "", ImageStatus.TOO_LARGE, f"file is {size} bytes, limit {max_bytes}")
        data = item.path.read_bytes()
    except OSError as exc:
        return EncodedImage(index, item.relpath, None, "", ImageStatus.UNREADABLE, f"cannot read file: {exc.strerror or exc}")
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return EncodedImage(index, item.relpath, None, digest, ImageStatus.EMPTY, "file is empty (0 bytes)")
    return EncodedImage(index, item.relpath, data, digest)
