"""Writing a benchmark report: the JSON document, two PNG plots beside it (matplotlib, imported only
here and only when plotting), and a rich summary table for the terminal."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table

from allbatch.bench.spec import STAGES

log = logging.getLogger("allbatch.bench")

STAGE_COLOURS = {
    "read": "#8c8c8c",
    "decode": "#4c72b0",
    "segment": "#dd8452",
    "assemble": "#55a868",
    "infer": "#c44e52",
    "write": "#8172b3",
}


def plot_paths(json_path: Path) -> dict[str, Path]:
    """``x.json`` -> ``{"stages": x-stages.png, "batch_sweep": x-batch-sweep.png}``."""
    stem = json_path.with_suffix("")
    return {"stages": Path(f"{stem}-stages.png"), "batch_sweep": Path(f"{stem}-batch-sweep.png")}


def write_report(doc: dict[str, Any], json_path: Path, plots: bool = True) -> list[Path]:
    """Write ``doc`` to ``json_path`` and, with ``plots``, the two PNGs beside it; returns the files written."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    if plots:
        paths = plot_paths(json_path)
        doc["plots"] = {name: path.name for name, path in paths.items()}
        plot_stages(doc, paths["stages"])
        plot_batch_sweep(doc, paths["batch_sweep"])
        written += list(paths.values())
    json_path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return [json_path, *written]


def _title(doc: dict[str, Any]) -> str:
    config = doc["config"]
    return (
        f"{doc['model']['name']} ({doc['model']['weights']}), {config['backend']} + {config['decoder']} decoder, "
        f"{doc['input']['images']} images of {doc['input']['megapixels_median']} MP\n{config['device']}"
    )


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_stages(doc: dict[str, Any], path: Path) -> None:
    """Stacked bars of milliseconds per image per stage (serial), one bar per batch size, with the
    end-to-end, infer-only and baseline milliseconds per image marked for comparison."""
    plt = _pyplot()
    sizes = list(doc["batch_sizes"])
    fig, ax = plt.subplots(figsize=(9, 2.4 + 0.9 * len(sizes)))
    for row, size in enumerate(sizes):
        left = 0.0
        for stage in STAGES:
            ms = doc["batch_sizes"][size]["stages"]["stages"][stage]["ms_per_image"]
            ax.barh(row, ms, left=left, color=STAGE_COLOURS[stage], label=stage if row == 0 else None)
            left += ms
        entry = doc["batch_sizes"][size]
        e2e = entry["end_to_end"]["images_per_s"]
        ax.plot(1000.0 / e2e["median"], row, "kD", label="end to end (overlapped)" if row == 0 else None)
        infer_ms = 1000.0 / entry["infer_only"]["images_per_s"]["median"]
        ax.plot(infer_ms, row, "w^", markeredgecolor="k", label="infer only" if row == 0 else None)
    if doc.get("baseline"):
        ax.axvline(1000.0 / doc["baseline"]["images_per_s"]["median"], color="k", linestyle="--", label="naive baseline")
    ax.set_yticks(range(len(sizes)), [f"batch {size}" for size in sizes])
    ax.set_xlabel("milliseconds per image (median of repeats; stages serial, one thread)")
    ax.set_title(_title(doc), fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18 - 0.25 / len(sizes)), ncol=5)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_batch_sweep(doc: dict[str, Any], path: Path) -> None:
    """Images/s against batch size (median with min-max bars) for end to end, infer-only and the serial
    stages, the baseline as a line; peak RSS of the end-to-end worker in a second panel."""
    plt = _pyplot()
    sizes = [int(size) for size in doc["batch_sizes"]]
    fig, (rate_ax, mem_ax) = plt.subplots(1, 2, figsize=(11, 4))

    def series(pick: Any, label: str, marker: str) -> None:
        stats = [pick(doc["batch_sizes"][str(size)]) for size in sizes]
        medians = [s["median"] for s in stats]
        errors = [[s["median"] - s["min"] for s in stats], [s["max"] - s["median"] for s in stats]]
        rate_ax.errorbar(sizes, medians, yerr=errors, marker=marker, capsize=3, label=label)

    series(lambda e: e["end_to_end"]["images_per_s"], "end to end", "D")
    series(lambda e: e["infer_only"]["images_per_s"], "infer only", "^")
    series(lambda e: e["stages"]["serial_images_per_s"], "stages, serial", "o")
    if doc.get("baseline"):
        rate_ax.axhline(doc["baseline"]["images_per_s"]["median"], color="k", linestyle="--", label="naive baseline")
    for ax in (rate_ax, mem_ax):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(size) for size in sizes])
        ax.set_xlabel("batch size")
    rate_ax.set_ylabel("images / s")
    rate_ax.set_ylim(bottom=0)
    rate_ax.legend(fontsize=8)
    for task, marker in (("end_to_end", "D"), ("infer_only", "^"), ("stages", "o")):
        mem_ax.plot(sizes, [doc["batch_sizes"][str(size)][task]["peak_rss_mib"] for size in sizes], marker=marker, label=task)
    mem_ax.set_ylabel("peak host RSS of the worker process (MiB)")
    mem_ax.set_ylim(bottom=0)
    mem_ax.legend(fontsize=8)
    fig.suptitle(_title(doc), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _fmt(stats: dict[str, Any] | None) -> str:
    if stats is None:
        return "-"
    return f"{stats['median']:.1f} ({stats['min']:.1f}-{stats['max']:.1f})"


def summary_table(doc: dict[str, Any]) -> Group:
    """Images/s per batch size (median, min-max) with the stage shares, then a table of the targets."""
    table = Table(title=_title(doc).replace("\n", ", "), title_justify="left")
    for column in ("batch", "e2e img/s", "infer-only img/s", "e2e/infer", "e2e/baseline", "largest stages (serial)", "peak RSS MiB"):
        table.add_column(column)
    for size, entry in doc["batch_sizes"].items():
        e2e = entry["end_to_end"]["images_per_s"]
        ranked = sorted(entry["stages"]["stages"].items(), key=lambda item: -item[1]["share"])[:3]
        table.add_row(
            size,
            _fmt(e2e),
            _fmt(entry["infer_only"]["images_per_s"]),
            str(entry["ratios"]["end_to_end_vs_infer_only"]),
            str(entry["ratios"].get("end_to_end_vs_baseline")),
            ", ".join(f"{stage} {values['share']:.0%}" for stage, values in ranked),
            str(entry["end_to_end"]["peak_rss_mib"]),
        )
    if doc.get("baseline"):
        table.add_row("baseline", _fmt(doc["baseline"]["images_per_s"]), "", "", "1.0", "per image", str(doc["baseline"]["peak_rss_mib"]))
    targets = Table(title="targets", title_justify="left")
    for column in ("target", "measured", "threshold", "verdict"):
        targets.add_column(column)
    for name, target in doc["targets"].items():
        if not target["applicable"]:
            verdict = "[dim]not this setting[/]"
        else:
            verdict = {True: "[green]met[/]", False: "[red]missed[/]", None: "not measured"}[target["met"]]
            if target.get("limiting_stage"):
                verdict += f" (limited by {target['limiting_stage']['stage']})"
        targets.add_row(name, str(target["measured"]), str(target["threshold"]), verdict)
    return Group(table, targets)
