"""The stain / camera robustness suite: validation re-run with each change applied to the original.

Each perturbation of issue 10 (``PERTURBATIONS``) is applied to the decoded original before
segmentation, through the one preparation recipe (``allbatch.prepare.recipe``), so the mask changes as it
would on another microscope. The changes are deterministic (no random draw), so a suite run is exactly
reproducible. Target: accuracy drops by at most 1.0 point under each (``MAX_DROP_POINTS``).
Used by ``factory/scripts/robustness.py`` (the validation part, figures into the manifest) and by the tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from allbatch import CLASS_NAMES
from allbatch.backends.base import InferenceOutput
from allbatch.evaluation.metrics import multiclass_metrics, screening_metrics
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.recipe import ImageChange, prepare_files
from allbatch.prepare.segment import SegmentationParams
from factory import perturb

log = logging.getLogger("factory.robustness")

MAX_DROP_POINTS = 1.0
"""The target: accuracy under any perturbation at most this many percentage points below plain."""

PERTURBATIONS: dict[str, ImageChange] = {
    "hue_+3": partial(perturb.hue_saturation, hue_units=3.0),
    "hue_-3": partial(perturb.hue_saturation, hue_units=-3.0),
    "saturation_x0.8": partial(perturb.hue_saturation, saturation=0.8),
    "saturation_x1.2": partial(perturb.hue_saturation, saturation=1.2),
    "brightness_x0.9": partial(perturb.brightness, factor=0.9),
    "brightness_x1.1": partial(perturb.brightness, factor=1.1),
    "gamma_0.8": partial(perturb.gamma, exponent=0.8),
    "gamma_1.25": partial(perturb.gamma, exponent=1.25),
    "jpeg_q70": partial(perturb.jpeg, quality=70),
    "blur_sigma1": partial(perturb.gaussian_blur, sigma=1.0),
    "upscale_x2_jpeg90": partial(perturb.rescale, factor=2.0, jpeg_quality=90),
    "downscale_x0.75": partial(perturb.rescale, factor=0.75),
}
"""Issue 10's list: hue +-3 OpenCV units, saturation x0.8/x1.2, brightness x0.9/x1.1, gamma 0.8/1.25,
JPEG q70, Gaussian blur sigma 1, 2x upscale re-encoded as a camera frame (JPEG q90), 0.75x downscale."""

Infer = Callable[[npt.NDArray[np.float32]], InferenceOutput]
"""(n, 2, 3, S, S) float32 model input -> InferenceOutput (a backend's ``infer``)."""


@dataclass(frozen=True)
class ConditionResult:
    """Figures of one condition ("plain" or a perturbation) on the labelled set."""

    name: str
    n: int
    accuracy: float
    macro_sensitivity: float
    all_sensitivity: float
    drop_points: float
    confusion: list[list[int]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": round(self.accuracy, 5),
            "macro_sensitivity": round(self.macro_sensitivity, 5),
            "all_sensitivity": round(self.all_sensitivity, 5),
            "drop_points": round(self.drop_points, 2),
            "confusion": self.confusion,
        }


@dataclass
class RobustnessReport:
    """The suite's outcome: plain figures first, then one per perturbation; ``plain_logits`` (n, C) are the
    model's logits on the unperturbed inputs (for calibration)."""

    conditions: list[ConditionResult]
    plain_logits: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    notes: list[str] = field(default_factory=list)

    @property
    def perturbed(self) -> list[ConditionResult]:
        return [c for c in self.conditions if not c.name.startswith("plain")]

    @property
    def worst_drop_points(self) -> float:
        return max((c.drop_points for c in self.perturbed), default=0.0)

    @property
    def meets_target(self) -> bool:
        return self.worst_drop_points <= MAX_DROP_POINTS

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_drop_target_points": MAX_DROP_POINTS,
            "worst_drop_points": round(self.worst_drop_points, 2),
            "meets_target": self.meets_target,
            "notes": self.notes,
            "conditions": {c.name: c.to_dict() for c in self.conditions},
        }

    def markdown_table(self) -> str:
        """The table for README and reports: condition, accuracy, drop, macro and ALL sensitivity."""
        lines = ["| condition | accuracy | drop (points) | macro sensitivity | ALL called ALL |", "| --- | --- | --- | --- | --- |"]
        for c in self.conditions:
            lines.append(
                f"| {c.name} | {100 * c.accuracy:.2f} % | {c.drop_points:+.2f} | {100 * c.macro_sensitivity:.2f} % | "
                f"{100 * c.all_sensitivity:.2f} % |"
            )
        return "\n".join(lines)


def infer_all(infer: Infer, inputs: npt.NDArray[np.float32], batch_size: int) -> InferenceOutput:
    """Run ``infer`` over (n, 2, 3, S, S) ``inputs`` in chunks of ``batch_size``."""
    return InferenceOutput.concat([infer(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)])


def condition_result(
    name: str, labels: npt.NDArray[np.int64], probs: npt.NDArray[np.float32], plain_accuracy: float | None
) -> ConditionResult:
    """Accuracy, macro sensitivity and ALL-vs-Benign sensitivity of (n, C) ``probs`` against ``labels``."""
    multi = multiclass_metrics(labels, probs.argmax(axis=1), CLASS_NAMES)
    screen = screening_metrics(labels, probs, CLASS_NAMES)
    base = multi.accuracy if plain_accuracy is None else plain_accuracy
    return ConditionResult(
        name=name,
        n=multi.n,
        accuracy=multi.accuracy,
        macro_sensitivity=multi.macro_sensitivity,
        all_sensitivity=screen.sensitivity,
        drop_points=100.0 * (base - multi.accuracy),
        confusion=multi.confusion.tolist(),
    )


def run_suite(
    paths: Sequence[Path],
    labels: npt.ArrayLike,
    infer: Infer,
    prep: Preprocessing,
    seg: SegmentationParams,
    names: Sequence[str] | None = None,
    batch_size: int = 32,
    stride: int = 1,
    progress: Callable[[RobustnessReport], None] | None = None,
) -> RobustnessReport:
    """Plain validation on all ``paths``, then validation under each perturbation in ``names`` (default:
    all, in order) on every ``stride``-th image; drops are against the plain figures of those same images.

    Args:
        paths: labelled images (all must decode).
        labels: (n,) class indices of ``paths``.
        infer: the model (a backend's ``infer``), fed (b, 2, 3, S, S) float32 host arrays.
        prep, seg: the model's preprocessing and segmentation (from its manifest).
        stride: 1 = every image under every perturbation; k > 1 = a systematic 1/k subset (machine time).
        progress: called with the report so far after each condition (e.g. to save partial results).
    Raises:
        KeyError: an unknown perturbation name.
    """
    y = np.asarray(labels, dtype=np.int64)
    chosen = list(PERTURBATIONS) if names is None else list(names)
    unknown = [name for name in chosen if name not in PERTURBATIONS]
    if unknown:
        raise KeyError(f"unknown perturbation(s) {unknown}; known: {list(PERTURBATIONS)}")
    plain = infer_all(infer, prepare_files(list(paths), prep, seg), batch_size)
    report = RobustnessReport(conditions=[condition_result("plain", y, plain.probs, None)], plain_logits=plain.logits, labels=y)
    subset = np.arange(0, len(y), max(1, stride))
    baseline = report.conditions[0]
    if len(subset) < len(y):
        baseline = condition_result(f"plain_every_{stride}", y[subset], plain.probs[subset], None)
        report.conditions.append(baseline)
        report.notes.append(f"perturbations on every {stride}-th image ({len(subset)} of {len(y)}); drops against {baseline.name}")
    log.info("plain: accuracy %.4f", report.conditions[0].accuracy)
    if progress is not None:
        progress(report)
    subset_paths = [paths[int(i)] for i in subset]
    for name in chosen:
        output = infer_all(infer, prepare_files(subset_paths, prep, seg, PERTURBATIONS[name]), batch_size)
        report.conditions.append(condition_result(name, y[subset], output.probs, baseline.accuracy))
        log.info("%s: accuracy %.4f (drop %.2f points)", name, report.conditions[-1].accuracy, report.conditions[-1].drop_points)
        if progress is not None:
            progress(report)
    return report
