"""Throughput benchmarks behind ``allbatch bench`` (timm ``benchmark.py`` style).

Per batch size, each measurement runs in a fresh subprocess (so peak RSS and device memory belong to
it alone) with warm-up passes, device synchronisation around every timed region, and several timed
repeats reported as median with min/max and quartiles:

- ``stages``: read, decode, segment, assemble, infer, write timed one after another (serial);
- ``infer_only``: the backend on a batch already resident where it computes (host or GPU);
- ``end_to_end``: the real job, ``allbatch.pipeline.run`` into a temporary results.h5;
- ``baseline``: the naive per-image pipeline of the peer notebooks on the same images and weights.

``run_bench`` orchestrates, ``report`` writes the JSON document and the PNG plots.
"""

from allbatch.bench.runner import BenchConfig, run_bench

__all__ = ["BenchConfig", "run_bench"]
