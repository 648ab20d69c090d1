"""Built DALI pipelines kept for the life of the process, keyed by everything that shapes their graph.

Building the preparation pipeline is the GPU path's start-up cost (issue 22: about 2.2 s per run on an
H200: a CUDA context, nvJPEG handles, pinned and device pools, and a first iteration that allocates every
output). Like the model, it is paid once per process: ``acquire`` hands out an idle pipeline built earlier
for the same ``PipelineKey``, or builds (and warms) a new one; ``release`` gives it back for the next run
or benchmark round. Two users of one key at the same time get two pipelines; one idle pipeline per key is
kept. Everything is closed at interpreter exit (``atexit``), before CUDA tears down, or by ``close_all``.

Thread-safe: the producer threads of consecutive runs may acquire and release concurrently.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from allbatch.prepare.dali.graph import Device
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.segment import SegmentationParams

log = logging.getLogger("allbatch.prepare.dali.pipeline_cache")


@dataclass(frozen=True)
class PipelineKey:
    """Everything that changes the built graph or its resources; equal keys can share a pipeline.

    device: "gpu" (mixed decoder) or "cpu" (CPU operators). device_id: the CUDA device (None on the CPU).
    max_batch: the pipeline's batch size (largest batch fed). num_threads: DALI's CPU worker threads.
    prefetch_depth: DALI's ``prefetch_queue_depth`` (the runner runs that many batches ahead).
    fancy_upsampling: the decoder's ``jpeg_fancy_upsampling``.
    """

    device: Device
    device_id: int | None
    max_batch: int
    num_threads: int
    prefetch_depth: int
    fancy_upsampling: bool
    prep: Preprocessing
    seg: SegmentationParams


@dataclass
class CacheStats:
    """Process-wide counts: pipelines built (and how long building and warming took), and acquisitions served
    by an idle pipeline."""

    builds: int = 0
    reuses: int = 0
    build_seconds: float = 0.0


_lock = threading.Lock()
_idle: dict[PipelineKey, Any] = {}
_stats = CacheStats()
_atexit_registered = False


def acquire(key: PipelineKey, build: Callable[[], Any]) -> tuple[Any, bool]:
    """An idle pipeline for ``key``, or a new one from ``build()`` (built and warmed, outside the lock).

    Returns:
        (pipeline, True when it was built by this call).
    """
    global _atexit_registered
    with _lock:
        pipe = _idle.pop(key, None)
        if pipe is not None:
            _stats.reuses += 1
            return pipe, False
        if not _atexit_registered:
            atexit.register(close_all)
            _atexit_registered = True
    began = time.perf_counter()
    pipe = build()
    seconds = time.perf_counter() - began
    with _lock:
        _stats.builds += 1
        _stats.build_seconds += seconds
    log.info("DALI pipeline built and warmed in %.2f s (%s, batch %d, %d threads)", seconds, key.device, key.max_batch, key.num_threads)
    return pipe, True


def release(key: PipelineKey, pipe: Any) -> None:
    """Give ``pipe`` (healthy, nothing in flight) back for later runs; a second idle one for the key is dropped."""
    with _lock:
        if key not in _idle:
            _idle[key] = pipe
            return
    del pipe  # one idle pipeline per key is enough; DALI frees this one's threads and buffers


def stats() -> CacheStats:
    """A copy of the process-wide counts."""
    with _lock:
        return CacheStats(_stats.builds, _stats.reuses, _stats.build_seconds)


def idle_count() -> int:
    with _lock:
        return len(_idle)


def close_all() -> None:
    """Drop every idle pipeline (their threads, pinned and device buffers); registered with ``atexit``."""
    with _lock:
        pipes = list(_idle.values())
        _idle.clear()
    pipes.clear()  # the last references: DALI's destructors run here, while CUDA is still up
