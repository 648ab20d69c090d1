"""The output lock: an exclusive advisory lock on ``.<name>.allbatch-lock`` beside results.h5.

Whoever writes an output holds it for the whole of that writing: ``allbatch run`` (every executor) takes it in
its run plan before the model loads and keeps it until the folder table is written; ``merge`` takes it while
it writes. Two runs appending to one file would each rebuild it under the other, and a run replacing an
output another run writes would lose that run's rows. POSIX ``flock``: the lock dies with its process, so a
killed run leaves a lock file that no longer locks anything.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from types import TracebackType
from typing import Self

from allbatch.core.errors import UserInputError

LOCK_SUFFIX = ".allbatch-lock"


def lock_path(output: Path) -> Path:
    """The advisory lock file beside ``output``."""
    return output.with_name(f".{output.name}{LOCK_SUFFIX}")


HOLDER_BYTES = 4096
"""At most this much of a lock file is read back as its holder's description."""


def this_process() -> str:
    """How a refusal names the process holding a lock: "pid N", and for a worker process started by
    ``multiprocessing`` (``--workers``/``--gpus``) its name and its parent's pid, e.g.
    "pid 812, worker 1 (shard 1/2, CPU) of pid 800"."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return f"pid {os.getpid()}"
    return f"pid {os.getpid()}, {multiprocessing.current_process().name} of pid {parent.pid}"


def lock_holder(output: Path) -> str | None:
    """The process holding the lock of ``output`` as its holder wrote it (``this_process``; "" when it
    wrote nothing yet), or None when no process holds it (POSIX; always None elsewhere).

    Probes the existing lock file only: an absent one means no writer, and a stale one left by a
    killed run is not locked. Creates nothing, deletes nothing."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(lock_path(output), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return os.pread(fd, HOLDER_BYTES, 0).decode("utf-8", "replace").strip()
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def held_locks(folder: Path, pattern: str) -> list[tuple[Path, str]]:
    """The outputs in ``folder`` whose names match the glob ``pattern`` and whose lock a live process
    holds, with that holder (``lock_holder``); an output need not exist yet for its lock to be held."""
    held = []
    for candidate in sorted(folder.glob(f".{pattern}{LOCK_SUFFIX}")):
        output = folder / candidate.name[1 : -len(LOCK_SUFFIX)]
        holder = lock_holder(output)
        if holder is not None:
            held.append((output, holder))
    return held


def locked_message(output: Path, holder: str | None) -> str:
    """The one-line refusal for an output another process writes, naming that process when known."""
    who = f"another allbatch run ({holder})" if holder else "another allbatch run"
    return f"{who} is writing {output}; wait for it to finish"


class OutputLock:
    """The lock of one output, taken on construction (UserInputError naming the holder when another
    process holds it; the lock file then holds ``this_process()`` of its holder).

    ``release`` is idempotent; a context manager releases on exit. ``borrowed()`` gives a handle for a
    callee (the results writer) that must not release a lock its caller (the run plan) owns."""

    def __init__(self, output: Path) -> None:
        self.output = Path(output)
        self.path = lock_path(self.output)
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserInputError(f"cannot write beside {self.output}: {exc.strerror}") from None
        try:
            import fcntl  # POSIX only; elsewhere the HDF5 file lock is the only guard

            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:
            pass
        except OSError:
            holder = os.pread(self._fd, HOLDER_BYTES, 0).decode("utf-8", "replace").strip()
            os.close(self._fd)
            self._fd = None
            raise UserInputError(locked_message(self.output, holder)) from None
        else:  # who holds it, for the refusal another process gets (``lock_holder``)
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, this_process().encode("utf-8"), 0)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None

    def borrowed(self) -> BorrowedLock:
        return BorrowedLock(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


class BorrowedLock:
    """A lock its owner keeps: ``release`` does nothing (the owner releases it)."""

    def __init__(self, owner: OutputLock) -> None:
        self.owner = owner
        self.output = owner.output

    @property
    def held(self) -> bool:
        return self.owner.held

    def release(self) -> None:
        return


def take_lock(output: Path, lock: OutputLock | BorrowedLock | None) -> OutputLock | BorrowedLock:
    """The lock to write ``output`` under: ``lock`` when the caller holds it already (borrowed), else a new one.

    Raises ValueError when ``lock`` is for another output or no longer held (a programming error)."""
    if lock is None:
        return OutputLock(output)
    if Path(lock.output).resolve() != Path(output).resolve() or not lock.held:
        raise ValueError(f"the lock given is not held for {output}")
    return lock.borrowed() if isinstance(lock, OutputLock) else lock
