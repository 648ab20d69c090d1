"""Targets and plots of an ``allbatch bench`` report (benchmark-only code, not installed with allbatch).

    python benchmarks/report.py RESULT.json [--no-plots]

Adds ``targets`` (and ``plots``) to RESULT.json, writes RESULT-stages.png and RESULT-batch-sweep.png beside it,
and prints the targets. Targets are judged at the batch size with the best end-to-end rate, on the paired
ratios (medians over the rounds of per-round ratios):

- ``end_to_end_vs_infer_only`` >= 0.85: the overlapped pipeline keeps the network busy.
- ``end_to_end_vs_baseline_cpu`` >= 1.5: a CPU backend (ONNX Runtime or OpenVINO) with the full DenseNet201.
- ``end_to_end_vs_baseline_gpu`` >= 20: on a GPU, against the naive baseline on the same GPU.
- ``end_to_end_h100`` >= 3000 images/s: DALI + torch CUDA on an H100 (or another Hopper GPU: H200, GH200).

``applicable`` says whether the run is the setting a target is stated for; a missed target names the stage with
the largest share of the serial stage time, the one that bounds the pipeline.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from allbatch.bench.report import run_title

CPU_BACKENDS = ("onnxruntime", "openvino")
STAGE_COLOURS = {"read": "#8c8c8c", "prepare": "#4c72b0", "infer": "#c44e52", "qc": "#55a868", "write": "#8172b3"}


def limiting_stage(shares: dict[str, float]) -> dict[str, Any] | None:
    """The stage with the largest share of serial time, e.g. ``{"stage": "infer", "share": 0.93}``."""
    if not shares:
        return None
    stage = max(shares, key=lambda name: shares[name])
    return {"stage": stage, "share": round(shares[stage], 4)}


def _target(
    description: str, threshold: float, measured: float | None, applicable: bool, note: str, shares: dict[str, float]
) -> dict[str, Any]:
    met = None if measured is None else measured >= threshold
    entry: dict[str, Any] = {
        "description": description,
        "threshold": threshold,
        "measured": None if measured is None else round(measured, 4),
        "met": met,
        "applicable": applicable,
    }
    if note:
        entry["note"] = note
    if met is False:
        entry["limiting_stage"] = limiting_stage(shares)
    return entry


HOPPER_GPUS = ("H100", "H200", "GH200")
"""Data-centre Hopper GPUs: the 3,000 images/s target is stated for an H100 and applies to its siblings."""


def is_hopper(gpu_name: str) -> bool:
    """True for an H100, H200 or GH200 by the name CUDA / nvidia-smi reports, e.g. "NVIDIA H200"."""
    return any(part in gpu_name.upper().split() for part in HOPPER_GPUS)


def evaluate_targets(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with its threshold, measured value, met (None when not measurable) and applicability."""
    summary, pipeline = doc["summary"], doc["pipeline"]
    best = doc["batch_sizes"][str(summary["best_batch_size"])]
    shares = {stage: float(values["share"]) for stage, values in best["serial"]["stages"].items()}
    on_gpu = pipeline["backend"] not in CPU_BACKENDS or pipeline["decoder"] == "dali"
    gpu_name = str(pipeline["device"]) if on_gpu else ""
    cpu_setting = not on_gpu and bool(doc["model"]["full_densenet201"])
    h100_setting = is_hopper(gpu_name) and pipeline["backend"] == "torch" and pipeline["decoder"] == "dali"
    return {
        "end_to_end_vs_infer_only": _target(
            "end-to-end images/s >= 85 % of infer-only images/s (same batch size)",
            0.85,
            summary["end_to_end_vs_infer_only"],
            True,
            "",
            shares,
        ),
        "end_to_end_vs_baseline_cpu": _target(
            "end-to-end >= 1.5x the naive baseline on the CPU (full DenseNet201)",
            1.5,
            summary["end_to_end_vs_baseline"],
            cpu_setting,
            "" if cpu_setting else "stated for a CPU backend with the full DenseNet201; this run differs",
            shares,
        ),
        "end_to_end_vs_baseline_gpu": _target(
            "end-to-end >= 20x the naive baseline on the same GPU",
            20.0,
            summary["end_to_end_vs_baseline"],
            on_gpu,
            "" if on_gpu else "stated for a GPU run; this run is on the CPU",
            shares,
        ),
        "end_to_end_h100": _target(
            "end-to-end >= 3000 images/s on an H100 with DALI + torch CUDA",
            3000.0,
            summary["end_to_end_images_per_s"],
            h100_setting,
            "" if h100_setting else "stated for DALI + torch on an H100; this run differs",
            shares,
        ),
    }


def _title(doc: dict[str, Any]) -> str:
    return f"{run_title(doc, separator=chr(10))}; load {doc['machine_load']['before']['loadavg_1_5_15'][0]}"


def plot_stages(doc: dict[str, Any], path: Path) -> None:
    """Stacked bars of milliseconds per image per stage (serial mode), one bar per batch size, with the
    end-to-end and infer-only milliseconds per image and the naive baseline marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(doc["batch_sizes"])
    fig, ax = plt.subplots(figsize=(9, 2.4 + 0.9 * len(sizes)))
    for row, size in enumerate(sizes):
        entry = doc["batch_sizes"][size]
        left = 0.0
        for stage, values in entry["serial"]["stages"].items():
            ax.barh(row, values["ms_per_image"], left=left, color=STAGE_COLOURS.get(stage), label=stage if row == 0 else None)
            left += values["ms_per_image"]
        ax.plot(1000.0 / entry["end_to_end"]["images_per_s"]["median"], row, "kD", label="end to end" if row == 0 else None)
        infer_ms = 1000.0 / entry["infer_only"]["images_per_s"]["median"]
        ax.plot(infer_ms, row, "w^", markeredgecolor="k", label="infer only" if row == 0 else None)
    if doc.get("baseline"):
        ax.axvline(1000.0 / doc["baseline"]["images_per_s"]["median"], color="k", linestyle="--", label="naive baseline")
    ax.set_yticks(range(len(sizes)), [f"batch {size}" for size in sizes])
    ax.set_xlabel("milliseconds per image (median over rounds; stages: serial mode)")
    ax.set_title(_title(doc), fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18 - 0.25 / len(sizes)), ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_batch_sweep(doc: dict[str, Any], path: Path) -> None:
    """Images/s against batch size (median with min-max bars): end to end, serial and infer-only; the baseline as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [int(size) for size in doc["batch_sizes"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label, marker in (("end_to_end", "end to end", "D"), ("infer_only", "infer only", "^"), ("serial", "serial", "o")):
        stats = [doc["batch_sizes"][str(size)][key]["images_per_s"] for size in sizes]
        medians = [s["median"] for s in stats]
        errors = [[s["median"] - s["min"] for s in stats], [s["max"] - s["median"] for s in stats]]
        ax.errorbar(sizes, medians, yerr=errors, marker=marker, capsize=3, label=label)
    if doc.get("baseline"):
        ax.axhline(doc["baseline"]["images_per_s"]["median"], color="k", linestyle="--", label="naive baseline")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(size) for size in sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.set_title(_title(doc), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path)
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    doc = json.loads(args.report.read_text(encoding="utf-8"))
    doc["targets"] = evaluate_targets(doc)
    if not args.no_plots:
        stem = args.report.with_suffix("")
        paths = {"stages": Path(f"{stem}-stages.png"), "batch_sweep": Path(f"{stem}-batch-sweep.png")}
        plot_stages(doc, paths["stages"])
        plot_batch_sweep(doc, paths["batch_sweep"])
        doc["plots"] = {name: path.name for name, path in paths.items()}
    args.report.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    for name, target in doc["targets"].items():
        verdict = {True: "met", False: "missed", None: "not measured"}[target["met"]]
        scope = "" if target["applicable"] else " (not this setting)"
        print(f"{name}: {target['measured']} vs {target['threshold']}: {verdict}{scope}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
