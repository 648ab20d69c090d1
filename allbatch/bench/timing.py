"""Timing and memory helpers shared by the benchmark measurements: summary statistics, device
synchronisation before reading a clock, peak host RSS and peak device memory of this process."""

from __future__ import annotations

import contextlib
import resource
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from allbatch.core.errors import BackendUnavailableError

Synchronize = Callable[[], None]


def summarise(samples: list[float]) -> dict[str, Any]:
    """Median, min, max and quartiles (numpy's linear interpolation) of ``samples``, plus the samples."""
    if not samples:
        raise ValueError("no samples to summarise")
    values = np.asarray(samples, dtype=np.float64)
    q1, median, q3 = np.percentile(values, [25.0, 50.0, 75.0])
    return {
        "median": float(median),
        "min": float(values.min()),
        "max": float(values.max()),
        "q1": float(q1),
        "q3": float(q3),
        "n": len(samples),
        "samples": [float(v) for v in values],
    }


def throughput(images: int, seconds: list[float]) -> dict[str, Any]:
    """Images per second for each timed repeat, summarised (the median of rates, not the rate of the median)."""
    return summarise([images / s if s > 0 else float("inf") for s in seconds])


def no_sync() -> None:
    """Host-only work: the clock can be read at once."""


def device_synchronizer(on_gpu: bool) -> Synchronize:
    """A function that waits for all queued GPU work of this process (``cudaDeviceSynchronize``).

    torch's or CuPy's device-wide synchronisation, whichever is loaded; a no-op when ``on_gpu`` is false.

    Raises:
        BackendUnavailableError: ``on_gpu`` but neither torch with CUDA nor CuPy can be imported.
    """
    if not on_gpu:
        return no_sync
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.synchronize
    except ImportError:
        pass
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailableError("benchmarking on the GPU needs torch with CUDA or cupy to synchronise the device") from exc
    sync: Synchronize = cupy.cuda.runtime.deviceSynchronize
    return sync


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (kernel's ru_maxrss: process-wide, never decreases)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def device_memory() -> dict[str, Any]:
    """Peak GPU memory seen by this process's allocators, in MiB; empty when no GPU library is in use.

    ``torch_max_allocated_mib``/``torch_max_reserved_mib``: torch's caching allocator peaks.
    ``cupy_pool_mib``: bytes held by CuPy's default pool at the end (it keeps freed blocks, so about its peak).
    ``device_used_mib``: the whole device's used memory at the end (CUDA context, DALI and other processes included).
    """
    found: dict[str, Any] = {}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        found["torch_max_allocated_mib"] = round(torch.cuda.max_memory_allocated() / (1 << 20), 1)
        found["torch_max_reserved_mib"] = round(torch.cuda.max_memory_reserved() / (1 << 20), 1)
        free, total = torch.cuda.mem_get_info()
        found["device_used_mib"] = round((total - free) / (1 << 20), 1)
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        with contextlib.suppress(cupy.cuda.runtime.CUDARuntimeError):  # cupy imported without a usable GPU
            found["cupy_pool_mib"] = round(cupy.get_default_memory_pool().total_bytes() / (1 << 20), 1)
    return found
