"""The benchmark report inside the package: the JSON document and a rich summary table for the terminal.
Targets and plots, which only the project's benchmark records need, live in ``benchmarks/report.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table


def write_json(doc: dict[str, Any], json_path: Path) -> Path:
    """Write ``doc`` to ``json_path`` (parents created); returns the path."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return json_path


def run_title(doc: dict[str, Any], separator: str = "; ") -> str:
    """What ran on what: model, backend and precision, decoder, images, device; the CPU, cores and ISA after ``separator``."""
    pipeline, cpu = doc["pipeline"], doc["environment"]["cpu"]
    return (
        f"{doc['model']['name']}, {pipeline['backend']} ({pipeline['compute_precision']}) + {pipeline['decoder']} decoder, "
        f"{doc['input']['images']} images of {doc['input']['megapixels_median']} MP on {pipeline['device']}{separator}"
        f"{cpu['model']}, {cpu['usable_cores']} cores, {cpu['isa_summary']}"
    )


def _fmt(stats: dict[str, Any] | None) -> str:
    if stats is None:
        return "-"
    return f"{stats['median']:.1f} ({stats['min']:.1f}-{stats['max']:.1f})"


def summary_table(doc: dict[str, Any]) -> Table:
    """Images/s per batch size (median, min-max over the rounds), the paired ratios and the stage shares."""
    table = Table(title=run_title(doc), title_justify="left")
    for column in ("batch", "e2e img/s", "infer-only img/s", "e2e/infer", "e2e/baseline", "infer GFLOP/s", "largest stages (serial)"):
        table.add_column(column)
    for size, entry in doc["batch_sizes"].items():
        ranked = sorted(entry["serial"]["stages"].items(), key=lambda item: -item[1]["share"])[:3]
        table.add_row(
            size,
            _fmt(entry["end_to_end"]["images_per_s"]),
            _fmt(entry["infer_only"]["images_per_s"]),
            str(entry["ratios"]["end_to_end_vs_infer_only"]),
            str(entry["ratios"]["end_to_end_vs_baseline"]),
            str(entry["infer_only"]["gflop_per_s"]),
            ", ".join(f"{stage} {values['share']:.0%}" for stage, values in ranked),
        )
    if doc.get("baseline"):
        baseline = doc["baseline"]
        rate, gflops = _fmt(baseline["images_per_s"]), str(baseline["gflop_per_s"])
        table.add_row("baseline", rate, "", "", "1.0", gflops, "per image, eager torch fp32")
    return table
