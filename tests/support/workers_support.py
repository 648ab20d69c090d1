"""Watching a `--workers` run from outside: its worker processes and the rows each part has committed."""

from __future__ import annotations

from pathlib import Path

import h5py
import psutil

from allbatch.results.schema import N_COMMITTED


def worker_pids(parent: int) -> list[int]:
    """The spawned worker processes of ``parent`` (not multiprocessing's resource tracker), oldest first."""
    found = []
    for child in psutil.Process(parent).children(recursive=True):
        try:
            cmdline, started = " ".join(child.cmdline()), child.create_time()
        except psutil.Error:
            continue
        if "spawn_main" in cmdline and "resource_tracker" not in cmdline:
            found.append((started, child.pid))
    return [pid for _, pid in sorted(found)]


def committed_rows(part: Path) -> int:
    """Rows a (running) worker has committed to its part so far (0 before the file exists)."""
    try:
        with h5py.File(part, "r", locking=False) as f:  # the worker holds the file open for writing
            return int(f[N_COMMITTED][0])
    except (OSError, KeyError):  # not created yet, or being renamed over
        return 0
