"""Run one measurement in this (fresh) process: ``python -m allbatch.bench.worker SPEC.json RESULT.json``.

A fresh process per measurement gives honest per-measurement peaks: ru_maxrss is process-wide and
never decreases, and GPU allocators keep what they once held. The result JSON holds the task's raw
timings plus ``peak_rss_mib`` and ``device_memory``. An ``AllbatchError`` is written as
``{"error": message}`` with exit code 2; a bug exits 1 with its traceback on stderr.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from allbatch.bench.spec import MeasureSpec, Task
from allbatch.bench.timing import device_memory, peak_rss_mib
from allbatch.errors import AllbatchError

EXIT_USER_ERROR = 2


def _task(name: Task) -> Callable[[MeasureSpec], dict[str, Any]]:
    if name == "baseline":
        from allbatch.bench.baseline import measure_baseline

        return measure_baseline
    from allbatch.bench import stages

    return {"stages": stages.measure_stages, "infer_only": stages.measure_infer_only, "end_to_end": stages.measure_end_to_end}[name]


def run_spec(spec: MeasureSpec) -> dict[str, Any]:
    """The task's result with this process's peak host RSS and device memory added."""
    result = _task(spec.task)(spec)
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    result["device_memory"] = device_memory()
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m allbatch.bench.worker SPEC.json RESULT.json\n")
        return EXIT_USER_ERROR
    logger = logging.getLogger("allbatch")
    logger.addHandler(logging.StreamHandler(sys.stderr))
    logger.setLevel(logging.WARNING)
    spec_path, result_path = Path(argv[0]), Path(argv[1])
    spec = MeasureSpec.load(spec_path)
    try:
        result = run_spec(spec)
    except AllbatchError as exc:
        result_path.write_text(json.dumps({"error": str(exc), "error_type": type(exc).__name__}), encoding="utf-8")
        return EXIT_USER_ERROR
    result_path.write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
