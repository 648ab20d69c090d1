"""The project's throughput targets, judged on ratios measured in one run.

- ``end_to_end_vs_infer_only`` >= 0.85: the overlapped pipeline keeps the network busy.
- ``end_to_end_vs_baseline_cpu`` >= 1.5: ONNX Runtime on the CPU with the full DenseNet201.
- ``end_to_end_vs_baseline_gpu`` >= 20: on a GPU, against the naive baseline on the same GPU.
- ``end_to_end_h100`` >= 3000 images/s: DALI + torch CUDA on a Hopper data-centre GPU (H100, H200, GH200).

Every target is evaluated whenever its figures exist; ``applicable`` says whether this run is the
setting the target is stated for. A missed target names the stage with the largest share of the
serial stage time, the one that bounds the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TargetContext:
    """The figures the targets are judged on (images/s medians at the best end-to-end batch size)."""

    on_gpu: bool
    gpu_name: str
    backend: str
    decoder: str
    full_model: bool
    stage_shares: dict[str, float]
    end_to_end: float | None
    infer_only: float | None
    baseline: float | None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def limiting_stage(shares: dict[str, float]) -> dict[str, Any] | None:
    """The stage with the largest share of serial time, e.g. ``{"stage": "infer", "share": 0.93}``."""
    if not shares:
        return None
    stage = max(shares, key=lambda name: shares[name])
    return {"stage": stage, "share": round(shares[stage], 4)}


def _target(description: str, threshold: float, measured: float | None, applicable: bool, note: str, ctx: TargetContext) -> dict[str, Any]:
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
        entry["limiting_stage"] = limiting_stage(ctx.stage_shares)
    return entry


HOPPER_GPUS = ("H100", "H200", "GH200")
"""GPU name parts of the Hopper data-centre GPUs the 3000 images/s target is stated for (the H200 is an H100
with more and faster memory; the key keeps its original name ``end_to_end_h100``)."""


def is_hopper(gpu_name: str) -> bool:
    """True for an H100, H200 or GH200 by the name CUDA / nvidia-smi reports, e.g. "NVIDIA H200"."""
    return any(part in gpu_name.upper().split() for part in HOPPER_GPUS)


def evaluate_targets(ctx: TargetContext) -> dict[str, dict[str, Any]]:
    """Each target with its threshold, measured value, met (None when not measurable) and applicability."""
    vs_baseline = _ratio(ctx.end_to_end, ctx.baseline)
    cpu_setting = not ctx.on_gpu and ctx.backend == "onnxruntime" and ctx.full_model
    h100_setting = is_hopper(ctx.gpu_name) and ctx.backend == "torch" and ctx.decoder == "dali"
    return {
        "end_to_end_vs_infer_only": _target(
            "end-to-end images/s >= 85 % of infer-only images/s (same batch size)",
            0.85,
            _ratio(ctx.end_to_end, ctx.infer_only),
            True,
            "",
            ctx,
        ),
        "end_to_end_vs_baseline_cpu": _target(
            "end-to-end >= 1.5x the naive baseline on the CPU (ONNX Runtime, full DenseNet201)",
            1.5,
            vs_baseline,
            cpu_setting,
            "" if cpu_setting else "stated for onnxruntime on the CPU with the full DenseNet201; this run differs",
            ctx,
        ),
        "end_to_end_vs_baseline_gpu": _target(
            "end-to-end >= 20x the naive baseline on the same GPU",
            20.0,
            vs_baseline,
            ctx.on_gpu,
            "" if ctx.on_gpu else "stated for a GPU run; this run is on the CPU",
            ctx,
        ),
        "end_to_end_h100": _target(
            "end-to-end >= 3000 images/s on an H100/H200 (Hopper) with DALI + torch CUDA",
            3000.0,
            ctx.end_to_end,
            h100_setting,
            "" if h100_setting else "stated for DALI + torch on an H100/H200; this run differs",
            ctx,
        ),
    }
