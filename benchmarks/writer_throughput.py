"""The single writer's sustained rows/s: what one results.h5 writer (the Ray driver, a single run) and
``allbatch merge`` can absorb, on synthetic rows shaped like real ones.

Usage: python benchmarks/writer_throughput.py [--rows 100000] [--batch-sizes 64,256,1024] [--parts 8]
       [--discovery-files 100000] [--json OUT]

Per batch size, in a fresh temporary folder: ``ResultsWriter.append`` of ``--rows`` rows (preallocated
working file, as a run that knows its file count has; every append is a crash-safe commit: write,
flush, n_committed, flush, reopen), then the closing compaction (gzip copy); and the Ray driver's
per-batch path (``rows_from_columns`` + append). Then ``merge_parts`` of ``--parts`` part files holding
the same rows. With ``--discovery-files N``, also ``allbatch.input.discover`` over N empty files in
folders of 1,000 (one thread; the rate a driver lists an archive at). ``--rows 0`` skips the writer.
Rates count rows (files) / seconds of that step only. The JSON records the machine,
the load average and other processes' CPU use while it ran (the machine may be shared).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from allbatch import CLASS_NAMES
from allbatch.bench.load_monitor import LoadMonitor
from allbatch.core.status import ImageStatus
from allbatch.environment.machine import collect_environment, machine_load
from allbatch.input.shard import Shard, paths_digest
from allbatch.qc.schema import QC_COLUMNS
from allbatch.results.merge import merge_parts
from allbatch.results.rows import ResultRows
from allbatch.results.writer import ResultsWriter
from allbatch.run.ray_data import rows_from_columns, rows_to_columns

COMPAT = {"model_sha256": "0" * 64, "preprocessing": "{}", "segmentation": "{}"}


def synthetic_rows(n: int, seed: int = 0) -> ResultRows:
    """n rows like a real archive's: ~40-character paths in class folders, real sha256 strings, 1 % failed."""
    rng = np.random.default_rng(seed)
    classes = ["Benign", "Early", "Pre", "Pro"]
    paths = [f"{classes[i % 4]}/WBC-Malignant-{classes[i % 4]}-{i:08d}.jpg" for i in range(n)]
    sha = [hashlib.sha256(path.encode()).hexdigest() for path in paths]
    failed = rng.random(n) < 0.01
    status = np.where(failed, np.int8(ImageStatus.DECODE_ERROR), np.int8(ImageStatus.OK)).astype(np.int8)
    logits = rng.normal(size=(n, len(CLASS_NAMES))).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probs[failed] = np.nan
    labels = np.where(failed, -1, np.nan_to_num(probs).argmax(axis=1)).astype(np.int8)
    fraction = np.where(failed, np.nan, rng.random(n)).astype(np.float32)
    errors = ["cannot decode: image file is truncated" if f else "" for f in failed.tolist()]
    file_stat = np.stack([rng.integers(10_000, 40_000, n), rng.integers(1 << 60, 1 << 61, n), rng.integers(1 << 60, 1 << 61, n)], axis=1)
    qc = {c.key: rng.random((n, *c.row_shape)).astype(c.dtype) * 100 for c in QC_COLUMNS}  # as many /qc bytes as a real row
    return ResultRows(
        paths,
        sha,
        status,
        errors,
        probs.astype(np.float32),
        labels,
        fraction,
        file_stat=file_stat.astype(np.int64),
        index=np.arange(n, dtype=np.int64),
        qc=qc,
    )


def row_slice(rows: ResultRows, start: int, stop: int) -> ResultRows:
    """Rows [start, stop) of ``rows``, whatever fields ResultRows has."""

    def part(value: Any) -> Any:
        if isinstance(value, dict):  # e.g. the /qc columns by key
            return {key: column[start:stop] for key, column in value.items()}
        return None if value is None else value[start:stop]

    return ResultRows(**{spec.name: part(getattr(rows, spec.name)) for spec in dataclasses.fields(rows)})


def batches(rows: ResultRows, size: int) -> list[ResultRows]:
    return [row_slice(rows, start, start + size) for start in range(0, len(rows), size)]


def time_writer(folder: Path, rows: ResultRows, batch_size: int) -> dict[str, Any]:
    parts = batches(rows, batch_size)
    out = folder / f"writer-{batch_size}.h5"
    writer = ResultsWriter.open(out, mode="new", provenance={"backend": "bench"}, compat=COMPAT, expected_rows=len(rows))
    started = time.perf_counter()
    for part in parts:
        writer.append(part)
    appended = time.perf_counter() - started
    started = time.perf_counter()
    writer.close()
    compacted = time.perf_counter() - started
    columns = [rows_to_columns(part) for part in parts]  # what the Ray driver receives, prepared outside the clock
    driver_out = folder / f"driver-{batch_size}.h5"
    writer = ResultsWriter.open(driver_out, mode="new", provenance={"backend": "bench"}, compat=COMPAT, expected_rows=len(rows))
    started = time.perf_counter()
    for batch in columns:
        writer.append(rows_from_columns(batch, np.arange(len(batch["paths"]), dtype=np.int64)))
    driver = time.perf_counter() - started
    writer.close()
    return {
        "batch_size": batch_size,
        "rows": len(rows),
        "append_s": round(appended, 3),
        "append_rows_per_s": round(len(rows) / appended),
        "commit_ms": round(1000 * appended / len(parts), 3),
        "compaction_s": round(compacted, 3),
        "compaction_rows_per_s": round(len(rows) / compacted),
        "ray_driver_rows_per_s": round(len(rows) / driver),
        "compact_file_bytes": out.stat().st_size,
        "compact_bytes_per_row": round(out.stat().st_size / len(rows), 1),
    }


def time_merge(folder: Path, rows: ResultRows, n_parts: int, batch_size: int) -> dict[str, Any]:
    total = len(rows)
    digest = paths_digest(rows.paths)
    part_files = []
    for k in range(n_parts):
        shard = Shard(k, n_parts)
        start, stop = shard.bounds(total)
        record = {"total": total, "sha256": digest, "shard": str(shard), "start": start, "stop": stop}
        compat = COMPAT | {"shard": json.dumps({"shard": str(shard), "total": total, "sha256": digest}, sort_keys=True)}
        path = folder / f"part-{k}.h5"
        with ResultsWriter.open(path, mode="new", provenance={"discovery": record}, compat=compat, expected_rows=stop - start) as writer:
            for part in batches(row_slice(rows, start, stop), batch_size):
                writer.append(part)
        part_files.append(path)
    started = time.perf_counter()
    merge_parts(part_files, folder / "merged.h5")
    seconds = time.perf_counter() - started
    return {"parts": n_parts, "rows": total, "merge_s": round(seconds, 3), "merge_rows_per_s": round(total / seconds)}


def time_discovery(folder: Path, n_files: int) -> dict[str, Any]:
    from allbatch.input.discover import discover

    root = folder / "tree"
    for start in range(0, n_files, 1000):
        sub = root / f"d{start // 1000}"
        sub.mkdir(parents=True)
        for i in range(start, min(n_files, start + 1000)):
            (sub / f"img{i}.jpg").touch()
    rates = []
    for _ in range(3):
        started = time.perf_counter()
        found = discover(root)
        rates.append(len(found) / (time.perf_counter() - started))
    return {"files": n_files, "files_per_s_median_of_3": round(sorted(rates)[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-sizes", default="64,256,1024")
    parser.add_argument("--parts", type=int, default=8)
    parser.add_argument("--discovery-files", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = synthetic_rows(max(args.rows, 1))
    report: dict[str, Any] = {"environment": collect_environment(sys.argv), "load_before": machine_load(), "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp, LoadMonitor() as monitor:
        folder = Path(tmp)
        if args.rows:
            report["writer"] = [time_writer(folder, rows, int(b)) for b in args.batch_sizes.split(",")]
            report["merge"] = time_merge(folder, rows, args.parts, 256)
        if args.discovery_files:
            report["discovery"] = time_discovery(folder, args.discovery_files)
    report["load_during"] = monitor.report()
    report["load_after"] = machine_load()
    text = json.dumps(report, indent=2)
    if args.json is not None:
        args.json.write_text(text + "\n")
    print(json.dumps({key: report[key] for key in ("writer", "merge", "discovery", "load_during") if key in report}, indent=2))


if __name__ == "__main__":
    main()
