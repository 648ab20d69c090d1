"""Time a real `allbatch run` in a subprocess: images/s (from its --json summary) and peak RSS.

Usage: python benchmarks/measure_run.py SRC [--model PATH] [--batch-size N] [other `allbatch run` options]
Prints one JSON object. Peak RSS is the child's ru_maxrss (the whole process: Python, ONNX Runtime,
decode threads, HDF5), measured by the kernel, not sampled.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("src", type=Path)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    args, extra = parser.parse_known_args()  # unknown options go to `allbatch run`
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.h5"
        command = [
            sys.executable,
            "-m",
            "allbatch",
            "run",
            str(args.src),
            "--out",
            str(out),
            "--batch-size",
            str(args.batch_size),
            "--quiet",
            "--json",
            *extra,
        ]
        if args.model is not None:
            command += ["--model", str(args.model)]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        if result.returncode not in (0, 3):
            sys.exit(f"allbatch run failed ({result.returncode}): {result.stderr[-2000:]}")
        summary = json.loads(result.stdout)
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(
            json.dumps(
                {
                    "machine": f"{platform.node()} ({platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores)",
                    "command": " ".join(command[1:]).replace(str(out), "results.h5"),
                    "images": summary["processed"],
                    "wall_s_incl_startup": round(wall, 1),
                    "pipeline_images_per_s": summary["images_per_second"],
                    "peak_rss_mib": round(peak_mib, 1),
                    "backend": summary["backend"],
                    "decoder": summary["decoder"],
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
