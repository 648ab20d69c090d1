"""What flows between stages: one read file (``EncodedImage``) and one prepared batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from allbatch.core.status import ImageStatus


@dataclass(frozen=True)
class FileStat:
    """What a resume compares before re-hashing a file: size (bytes), mtime_ns and ctime_ns.

    ``racy``: the file changed too shortly before this stat was taken to trust it (``allbatch.input.read.
    RACY_NS``); it is then recorded with mtime_ns -1 (``recorded``), which never matches, so that
    file is always re-hashed by the next resume.
    """

    size: int
    mtime_ns: int
    ctime_ns: int
    racy: bool = False

    def recorded(self) -> tuple[int, int, int]:
        """(size, mtime_ns, ctime_ns) as stored in /images/file_stat."""
        return (self.size, -1 if self.racy else self.mtime_ns, self.ctime_ns)


UNKNOWN_STAT = (-1, -1, -1)
"""(size, mtime_ns, ctime_ns) recorded for a file whose stat was not taken."""


@dataclass
class EncodedImage:
    """One input file after the read stage (host memory).

    ``data`` is None when the file could not be read; ``status``/``error`` start as the read outcome
    and are updated by the decode stage. ``sha256`` is of the bytes read ("" when unreadable or not
    read). ``stat`` is the file's stat taken before reading (None when it could not be taken).
    """

    index: int
    relpath: str
    data: bytes | None
    sha256: str
    status: ImageStatus = ImageStatus.OK
    error: str = ""
    stat: FileStat | None = None


@dataclass
class PreparedBatch:
    """A batch after decode, segment and assemble.

    images: every image of the batch in input order, statuses final for decoding.
    inputs: (n_ok, 2, 3, S, S) float32 model input for the images whose status is OK, in order;
        a NumPy array on the CPU path, a CuPy array on the GPU path.
    mask_fraction: (n,) float32 segmented fraction at native resolution, NaN for failed images.
    sizes: (n, 2) int32 native (height, width) after decoding, 0 for failed images; None when the
        preparer does not report them (quality control then skips the size check).
    input_measures: the quality-control measures of ``inputs`` (``qc.measures.input_measures``: name ->
        (n_ok, ...) arrays on the inputs' device), taken by the thread that prepared the batch so that the
        backend's thread does not wait for them; None: the qc stage takes them itself.
    """

    images: list[EncodedImage]
    inputs: Any
    mask_fraction: npt.NDArray[np.float32]
    sizes: npt.NDArray[np.int32] | None = None
    input_measures: dict[str, Any] | None = None

    @property
    def ok_positions(self) -> list[int]:
        return [i for i, image in enumerate(self.images) if image.status == ImageStatus.OK]


class Preparer(Protocol):
    """Decode + segment + assemble for one batch; never raises for a bad image, marks it instead."""

    name: str

    def prepare(self, images: list[EncodedImage]) -> PreparedBatch: ...

    def close(self) -> None: ...


@runtime_checkable
class RunAheadPreparer(Preparer, Protocol):
    """A preparer that can have several batches under way (the DALI preparer): ``start`` begins a batch and
    returns a handle, ``finish`` completes it; ``prepare(images)`` is ``finish(start(images))``. Batches are
    finished in the order they were started. ``prefetch_depth``: batches worth having under way at once."""

    prefetch_depth: int

    def start(self, images: list[EncodedImage]) -> Any: ...

    def finish(self, pending: Any) -> PreparedBatch: ...
