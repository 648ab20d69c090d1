"""Other processes' CPU use while a benchmark runs, sampled in a background thread (psutil).

On a shared machine a before/after snapshot misses load that comes and goes; this records, every
``interval_s``, the CPU time taken by processes outside this process tree, as a share of all cores.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType
from typing import Any, Self

FOREIGN_REPORT_PERCENT = 10.0
"""A foreign process is named in the report when one sample saw it above this share of one core."""


class LoadMonitor:
    """Context manager sampling foreign CPU load; ``report()`` summarises it (empty without psutil)."""

    def __init__(self, interval_s: float = 2.0) -> None:
        self.interval_s = interval_s
        self.samples: list[float] = []
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._available = True

    def __enter__(self) -> Self:
        try:
            import psutil  # noqa: F401 - checked here so that the thread need not
        except ImportError:
            self._available = False
            return self
        self._thread = threading.Thread(target=self._run, name="allbatch-load-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        cores = os.cpu_count() or 1
        known: dict[int, psutil.Process] = {}
        while not self._stop.wait(self.interval_s):
            try:
                ours = {me.pid, *(child.pid for child in me.children(recursive=True))}
            except psutil.Error:
                ours = {me.pid}
            total = 0.0
            for proc in psutil.process_iter(["pid", "cmdline", "name"]):
                if proc.pid in ours:
                    continue
                tracked = known.setdefault(proc.pid, proc)
                try:
                    percent = tracked.cpu_percent(None)  # since the previous sample (0.0 on the first)
                except psutil.Error:
                    continue
                total += percent
                if percent >= FOREIGN_REPORT_PERCENT:
                    command = " ".join(proc.info.get("cmdline") or [proc.info.get("name") or "?"])[:160]
                    self.seen[command] = max(self.seen.get(command, 0.0), percent)
            self.samples.append(min(100.0, total / cores))

    def report(self) -> dict[str, Any]:
        """Mean and max share of all cores used by other processes, and the busiest of them."""
        if not self._available:
            return {"sampled": False, "reason": "psutil not installed"}
        samples = self.samples[1:]  # the first sample has no previous reading to measure against
        busiest = sorted(self.seen.items(), key=lambda item: -item[1])[:8]
        return {
            "sampled": True,
            "interval_s": self.interval_s,
            "samples": len(samples),
            "foreign_cpu_percent_of_all_cores_mean": round(sum(samples) / len(samples), 1) if samples else None,
            "foreign_cpu_percent_of_all_cores_max": round(max(samples), 1) if samples else None,
            "foreign_processes_peak_percent_of_one_core": [{"command": command, "percent": round(p, 1)} for command, p in busiest],
        }
