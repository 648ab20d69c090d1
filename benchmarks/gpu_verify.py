"""Helpers of ``benchmarks/gpu_verify.sh``: pick the images, compare two results files, write the summary.

    python benchmarks/gpu_verify.py images SRC DEST --count N     N images spread over SRC, class folders kept
    python benchmarks/gpu_verify.py compare GPU.h5 CPU.h5 --json parity.json
    python benchmarks/gpu_verify.py summary WORK OUT               OUT/summary.json from what the steps left

Every subcommand reads only files; none needs a GPU. ``summary`` never fails on a missing or broken input
(a step that failed is what it reports), so the summary is written whatever happened before it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

MAX_LISTED = 20
"""Disagreeing images listed by name in parity.json."""


def pick_images(src: Path, dest: Path, count: int) -> int:
    """Copy ``count`` images spread evenly over the naturally sorted files under ``src`` into ``dest``, keeping
    their folders relative to ``src`` (the class names). ``count`` 0 or above the total takes every image."""
    from allbatch.input.discover import discover

    files = [item for item in discover(src) if item.problem is None]
    if 0 < count < len(files):
        files = [files[i] for i in np.linspace(0, len(files) - 1, num=count).round().astype(int)]
    for item in files:
        target = dest / Path(item.relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.path, target)
    return len(files)


def compare(gpu_h5: Path, cpu_h5: Path) -> dict[str, Any]:
    """Label-for-label comparison of two results files of the same images (rows matched by path)."""
    from allbatch.results.reader import read_results

    gpu, cpu = read_results(gpu_h5), read_results(cpu_h5)
    cpu_row = {path: i for i, path in enumerate(cpu.paths.tolist())}
    common = [(i, cpu_row[path]) for i, path in enumerate(gpu.paths.tolist()) if path in cpu_row]
    g = np.array([i for i, _ in common], dtype=np.int64)
    c = np.array([j for _, j in common], dtype=np.int64)
    same_status = gpu.status[g] == cpu.status[c]
    both_ok = same_status & (gpu.status[g] == 0)
    labels_equal = gpu.labels[g][both_ok] == cpu.labels[c][both_ok]
    dprob = np.abs(gpu.probs[g][both_ok] - cpu.probs[c][both_ok])
    dmask = np.abs(gpu.mask_fraction[g][both_ok] - cpu.mask_fraction[c][both_ok])
    disagreeing = [
        {"path": str(gpu.paths[i]), "gpu": int(gpu.labels[i]), "cpu": int(cpu.labels[j])}
        for i, j in zip(g[both_ok][~labels_equal], c[both_ok][~labels_equal], strict=True)
    ]
    n_ok = int(both_ok.sum())
    return {
        "images_gpu": len(gpu),
        "images_cpu": len(cpu),
        "matched_by_path": len(common),
        "status_equal": int(same_status.sum()),
        "both_ok": n_ok,
        "label_agreement": round(float(labels_equal.mean()), 6) if n_ok else None,
        "labels_differing": len(disagreeing),
        "max_abs_prob_diff": float(dprob.max()) if n_ok else None,
        "mean_abs_prob_diff": float(dprob.mean()) if n_ok else None,
        "max_abs_mask_fraction_diff": float(dmask.max()) if n_ok else None,
        "disagreeing": disagreeing[:MAX_LISTED],
        "gpu": {"backend": gpu.attrs.get("backend"), "decoder": gpu.attrs.get("decoder"), "device": gpu.attrs.get("device")},
        "cpu": {"backend": cpu.attrs.get("backend"), "decoder": cpu.attrs.get("decoder"), "device": cpu.attrs.get("device")},
    }


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _junit(path: Path) -> dict[str, Any] | None:
    """Counts from a pytest junit XML (None when it is missing or unreadable)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {key: sum(int(suite.get(key, 0)) for suite in suites) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in root.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return {**counts, "failed_tests": failed[:MAX_LISTED]}


def _memory_samples(path: Path) -> dict[str, Any] | None:
    """Max and last GPU memory used (MiB, whole device) from nvidia-smi's csv samples."""
    try:
        lines = path.read_text(encoding="utf-8").split()
    except OSError:
        return None
    values = [int(v) for v in lines if v.isdigit()]
    return {"max_used_mib": max(values), "samples": len(values)} if values else None


def _bench(report: Any) -> dict[str, Any] | None:
    """The figures of an ``allbatch bench`` report that the note needs; tolerant of schema changes."""
    if not isinstance(report, dict):
        return None
    figures: dict[str, Any] = {"summary": report.get("summary"), "targets": report.get("targets")}
    memory = {}
    for batch, measured in (report.get("batch_sizes") or {}).items():
        if isinstance(measured, dict):
            memory[batch] = {name: (m or {}).get("device_memory") for name, m in measured.items() if isinstance(m, dict)}
    figures["device_memory"] = memory
    baseline = report.get("baseline")
    if isinstance(baseline, dict):
        figures["baseline_device_memory"] = baseline.get("device_memory")
        figures["baseline_agreement"] = baseline.get("agreement_with_pipeline")
    return figures


def summary(work: Path, out: Path) -> dict[str, Any]:
    """Everything the steps left in ``work`` and ``out``, in one JSON (``out/summary.json``)."""
    steps = []
    log = work / "steps.tsv"
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            name, rc, seconds = [*line.split("\t"), "", ""][:3]
            status = "ok" if rc == "0" else "timeout" if rc in ("124", "137") else "skipped" if rc == "125" else "failed"
            code = int(rc) if rc.lstrip("-").isdigit() else rc
            steps.append({"step": name, "rc": code, "seconds": float(seconds or 0), "status": status})
    result = {
        "mode": (work / "mode").read_text(encoding="utf-8").strip() if (work / "mode").is_file() else "unknown",
        "device": (work / "device").read_text(encoding="utf-8").strip() if (work / "device").is_file() else "unknown",
        "all_ok": bool(steps) and all(step["status"] == "ok" for step in steps),
        "steps": steps,
        "tests": _junit(out / "gpu-tests.xml"),
        "run_gpu_side": _json(work / "run-gpu.json"),
        "run_cpu_side": _json(work / "run-cpu.json"),
        "parity": _json(out / "parity.json"),
        "bench": _bench(_json(out / "bench.json")),
        "gpu_memory_nvidia_smi": _memory_samples(work / "gpu-memory.csv"),
    }
    (out / "summary.json").write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    images = sub.add_parser("images", help="copy N images spread over SRC into DEST")
    images.add_argument("src", type=Path)
    images.add_argument("dest", type=Path)
    images.add_argument("--count", type=int, default=0)
    comparison = sub.add_parser("compare", help="compare two results files label for label")
    comparison.add_argument("gpu", type=Path)
    comparison.add_argument("cpu", type=Path)
    comparison.add_argument("--json", type=Path, required=True)
    summarise = sub.add_parser("summary", help="write OUT/summary.json")
    summarise.add_argument("work", type=Path)
    summarise.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "images":
        print(f"{pick_images(args.src, args.dest, args.count)} images copied into {args.dest}")
        return 0
    if args.command == "compare":
        result = compare(args.gpu, args.cpu)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(json.dumps({k: v for k, v in result.items() if k != "disagreeing"}))
        return 0
    result = summary(args.work, args.out)
    print(json.dumps({k: result[k] for k in ("mode", "device", "all_ok", "steps")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
