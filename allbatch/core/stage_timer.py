"""Per-stage timing of the pipeline: an optional hook handed to ``allbatch.run.engine.run`` (``bench`` uses it).

Off by default: without a timer the pipeline enters a shared ``nullcontext`` per batch and reads no clock.
With one, each stage's region is timed with ``time.perf_counter`` (the device synchronised before and after
when a ``sync`` is given) and accumulated per stage, from whichever thread runs the stage.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

STAGES = ("read", "prepare", "infer", "qc", "write")
"""The pipeline's stages in data-flow order: read (bytes + sha256), prepare (decode, segment, assemble),
infer (the backend), qc (quality-control measures and flags: the input measures where the batch is prepared,
the rest after inference), write (results.h5; in the threaded mode only the time the backend thread waited
on the writer thread)."""

_OFF: AbstractContextManager[None] = nullcontext()


class StageTimer:
    """Accumulated seconds and images per stage. Thread-safe: the producer, the backend and the writer
    threads report into one timer.

    Args:
        sync: called before and after each timed region (``torch.cuda.synchronize`` for GPU stages), so the
            clock covers the device's work; None on the host.
    """

    def __init__(self, sync: Callable[[], Any] | None = None) -> None:
        self.sync = sync
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.images: dict[str, int] = dict.fromkeys(STAGES, 0)
        self._lock = threading.Lock()

    @contextmanager
    def time(self, stage: str, images: int) -> Iterator[None]:
        """Time the region as ``stage`` handling ``images`` images."""
        if self.sync is not None:
            self.sync()
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.sync is not None:
                self.sync()
            elapsed = time.perf_counter() - started
            with self._lock:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + elapsed
                self.images[stage] = self.images.get(stage, 0) + images

    def to_dict(self) -> dict[str, dict[str, float | int]]:
        """{stage: {"seconds": s, "images": n}} for every stage, in data-flow order."""
        with self._lock:
            return {stage: {"seconds": self.seconds[stage], "images": self.images[stage]} for stage in self.seconds}


def timed(timer: StageTimer | None, stage: str, images: int) -> AbstractContextManager[None]:
    """``timer.time(stage, images)``, or a shared no-op context when timing is off."""
    return _OFF if timer is None else timer.time(stage, images)
