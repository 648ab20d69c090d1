"""Benchmarks: the throughput measurements behind ``allbatch bench``: a thin layer on the real pipeline (timm ``benchmark.py`` style).

``runner.run_bench`` runs paired, alternating rounds in this process: per batch size the serial pipeline with
the stage timer (``run.engine.run`` with ``serial=True`` + ``StageTimer``), the threaded pipeline (the real job), and the
backend alone on a resident batch; then the naive per-image baseline (``baseline``). ``report`` writes the JSON
and the terminal table; targets and plots live in ``benchmarks/report.py`` (not installed).
"""

from allbatch.bench.runner import BenchConfig, BenchPlan, BenchProgress, plan_bench, run_bench

__all__ = ["BenchConfig", "BenchPlan", "BenchProgress", "plan_bench", "run_bench"]
