"""Replace a file atomically: write a temporary file beside it, fsync, rename over it, fsync the folder.

The one implementation for every file allbatch replaces whole (results.h5 compaction and resume, merged
results, the folder table, TensorRT engines, reports, CSV and JSON outputs). Temporary names are
``.<name>.<pid>.allbatch-tmp``: hidden, owned by one process, and recognisable, so that a later writer of
the same output (holding its lock) can remove the ones a killed process left (``remove_stale``).
"""

from __future__ import annotations

import errno
import glob
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from allbatch.core.errors import OutputWriteError

log = logging.getLogger("allbatch.core.atomic_file")

TMP_SUFFIX = "allbatch-tmp"
WRITE_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EFBIG: "the file size limit was reached",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EIO: "an input/output error occurred",
}
"""errno -> what a failed write of an output means, in words."""


def write_failure_reason(exc: BaseException) -> str | None:
    """Why writing failed, in a few words, for an OSError or the RuntimeError h5py raises when HDF5's own write,
    flush or close fails ("... errno = 28, error message = 'No space left on device' ..."); None when ``exc``
    is neither (a bug, which keeps its traceback)."""
    text = str(exc)
    code = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
    if not isinstance(exc, OSError) and not (isinstance(exc, RuntimeError) and ("write failed" in text or "errno =" in text)):
        return None
    for known, words in WRITE_ERRNOS.items():
        if code == known or f"errno = {known}," in text or os.strerror(known) in text:
            return words
    lines = text.strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@contextmanager
def output_errors(path: Path, consequence: str = "the previous file, if any, is unchanged") -> Iterator[None]:
    """Turn a failed write of ``path`` (``write_failure_reason``) into OutputWriteError: one line naming the file,
    the reason and ``consequence``; anything else propagates unchanged."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        reason = write_failure_reason(exc)
        if reason is None:
            raise
        raise OutputWriteError(f"cannot write {path}: {reason}; {consequence}") from exc


def tmp_path(path: Path) -> Path:
    """The temporary file this process writes before it replaces ``path``: same folder, hidden."""
    return path.with_name(f".{path.name}.{os.getpid()}.{TMP_SUFFIX}")


def fsync_path(path: Path) -> None:
    """Flush ``path`` (a file or a folder) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install(tmp: Path, path: Path) -> None:
    """Rename the complete, fsynced ``tmp`` over ``path`` and make the rename durable."""
    os.replace(tmp, path)
    try:
        fsync_path(path.parent)
    except OSError:  # some file systems cannot fsync a folder; the rename itself is atomic
        log.debug("could not fsync the folder of %s", path)


@contextmanager
def replacing(path: Path, consequence: str = "the previous file, if any, is unchanged") -> Iterator[Path]:
    """Yield the temporary path to write; on a clean exit it is fsynced and renamed over ``path``,
    on an exception it is removed and ``path`` is untouched. A failed write (disk full, file-size limit,
    read-only folder) becomes OutputWriteError, one line ending in ``consequence`` (``output_errors``)."""
    tmp = tmp_path(path)
    try:
        with output_errors(path, consequence):
            yield tmp
            fsync_path(tmp)
            install(tmp, path)
    finally:
        remove_quietly(tmp)


def remove_quietly(tmp: Path) -> None:
    """Delete a temporary file if it exists; a failure (a read-only folder) is logged, never raised over the
    error that is being reported."""
    try:
        tmp.unlink(missing_ok=True)
    except OSError as exc:
        log.debug("could not remove %s: %s", tmp, exc)


def write_bytes(path: Path, data: bytes, *, make_parents: bool = False) -> None:
    """Replace ``path`` by ``data`` atomically; ``make_parents`` creates its folder first (caches)."""
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` (UTF-8) atomically."""
    write_bytes(path, text.encode("utf-8"))


def remove_stale(path: Path) -> list[Path]:
    """Delete the temporary files killed processes left beside ``path``. Call only while holding the
    output's lock (``results.lock``), so that no live writer of ``path`` owns one. Returns what was removed."""
    removed = []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.{TMP_SUFFIX}"):
        log.info("removing %s left by an interrupted run", candidate)
        candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed
