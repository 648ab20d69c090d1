"""How large and how slow is ``allbatch report`` on a big run? Writes a results.h5 of N rows with the real
writer (paths cycle over real images in folders of 200, so thumbnails are read; probabilities and flags are
random, 5 % flagged, 0.5 % failed) and times ``write_report`` on it.

    .venv/bin/python benchmarks/report_scale.py --images ../shared/data/all-kaggle/Original --rows 100000 --out /tmp/scale
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from allbatch.core.status import ImageStatus
from allbatch.input.discover import discover
from allbatch.qc.flags import QcFlag
from allbatch.report.html import write_report
from allbatch.results.rows import ResultRows
from allbatch.results.writer import ResultsWriter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True, help="a folder of real images (recursively)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--out", type=Path, required=True, help="folder for scale.h5 and scale.html")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    files = [f.relpath for f in discover(args.images, "follow")]
    rng = np.random.default_rng(0)
    results = args.out / "scale.h5"
    started = time.perf_counter()
    with ResultsWriter.open(results, mode="overwrite", provenance={"input_root": str(args.images)}, compat={}) as writer:
        for start in range(0, args.rows, 4096):
            n = min(4096, args.rows - start)
            index = np.arange(start, start + n)
            # each row points at a real image (so thumbnails load) under a distinct path prefix (so paths are unique)
            paths = [f"slide{i // 200:04d}/../{files[i % len(files)]}" for i in index.tolist()]
            status = np.where(rng.random(n) < 0.005, ImageStatus.DECODE_ERROR, ImageStatus.OK).astype(np.int8)
            logits = rng.normal(scale=3.0, size=(n, 4))
            probs = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
            probs[status != 0] = np.nan
            flags = np.where(rng.random(n) < 0.05, int(QcFlag.OUTLIER), 0).astype(np.uint16)
            flags[status != 0] = 0
            writer.append(
                ResultRows(
                    paths=paths,
                    sha256=[hashlib.sha256(p.encode()).hexdigest() for p in paths],
                    status=status,
                    errors=["cannot decode: synthetic failure" if s else "" for s in status.tolist()],
                    probs=probs,
                    labels=np.where(status != 0, -1, np.nan_to_num(probs).argmax(axis=1)).astype(np.int8),
                    mask_fraction=np.where(status != 0, np.nan, 0.05).astype(np.float32),
                    qc={"flags": flags, "max_prob": np.nanmax(np.nan_to_num(probs, nan=0.0), axis=1).astype(np.float32)},
                )
            )
    written = time.perf_counter() - started
    html = args.out / "scale.html"
    cpu_before = time.process_time()
    content, seconds = write_report(results, html, group_by="1")
    cpu = time.process_time() - cpu_before
    print(
        json.dumps(
            {
                "rows": args.rows,
                "folders": len(content.groups.groups),
                "flagged": content.n_flagged,
                "results_mb": round(results.stat().st_size / 1e6, 2),
                "results_write_s": round(written, 1),
                "report_mb": round(html.stat().st_size / 1e6, 2),
                "report_s": round(seconds, 2),
                "report_cpu_s": round(cpu, 2),
                "load_average": [round(v, 1) for v in os.getloadavg()],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
