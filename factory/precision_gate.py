"""The reduced-precision gate that judges what users receive (issue 25, point 4).

The older gate (``backends.fp16_check.judge_fp16``) bounds every probability's move by 0.02. A user never sees a
raw probability move: they receive a class, a calibrated confidence, quality-control flags and folder verdicts.
This gate compares exactly those between OpenVINO bf16 and the fp32 reference on the selection part:

- labels: share of images with the same class >= ``min_label_agreement`` (0.995);
- calibration: |ECE(bf16) - ECE(fp32)| <= ``max_ece_change`` (0.005, i.e. half a point; 15 bins, true labels);
- quality control: share of images with identical QC flags >= ``min_flag_agreement`` (0.99), flags computed by
  the runtime's own ``QcStage`` from each precision's logits and features;
- folder verdicts: every folder (a block of 25 consecutive image numbers, the split's unit, standing in for a
  slide; plus each class folder) gets the same verdict (``summarize.groups.verdict_for``) under both.

The verdict goes into ``manifest.validation.openvino_bf16`` (``accepted``, ``reason``, the figures, and
``runtime_max_abs_prob_diff``: the bound the backend's own check on the demo images applies on the user's CPU).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from allbatch import CLASS_NAMES
from allbatch.backends.base import InferenceOutput
from allbatch.backends.fp16_check import FP16_MAX_ABS_PROB_DIFF
from allbatch.model.manifest import ModelManifest
from allbatch.qc.stage import QcStage
from allbatch.summarize.groups import VerdictRule, verdict_for
from factory.calibration import expected_calibration_error
from factory.part_outputs import PartOutputs, pixels_to_inputs

GATE_NAME = "user_facing_v1"


@dataclass(frozen=True)
class GateThresholds:
    """What bf16 must keep of the fp32 results (see the module docstring)."""

    min_label_agreement: float = 0.995
    max_ece_change: float = 0.005
    min_flag_agreement: float = 0.99
    min_verdict_agreement: float = 1.0


def qc_flags(outputs: PartOutputs, logits: npt.NDArray[np.float32], features: npt.NDArray[np.float32], manifest: ModelManifest) -> Any:
    """(n,) uint16 QC flags of a cached part under the given logits and features (the runtime's ``QcStage``)."""
    stage = QcStage(manifest)
    flags = []
    for start in range(0, len(outputs.labels), 64):
        rows = slice(start, start + 64)
        inputs = pixels_to_inputs(outputs.pixels[rows], manifest.prep)
        output = InferenceOutput(np.zeros_like(logits[rows]), logits[rows], features[rows])
        flags.append(stage.measure(inputs, output, outputs.mask_fraction[rows], outputs.sizes[rows])["flags"])
    return np.concatenate(flags)


def folder_verdicts(
    folders: list[str], labels_predicted: npt.NDArray[np.int64], flags: npt.NDArray[np.uint16], rule: VerdictRule
) -> dict[str, str]:
    """{folder: verdict} with unflagged images voting, by the run's folder rule ``rule`` (the model's error rates:
    ``VerdictRule(benign_errors=benign_errors_of(manifest.validation))``); every image here decoded."""
    verdicts = {}
    names = np.array(folders)
    for folder in sorted(set(folders)):
        usable = (names == folder) & (flags == 0)
        votes = np.bincount(labels_predicted[usable], minlength=len(CLASS_NAMES)).astype(np.int64)
        verdicts[folder], _ = verdict_for(votes, int(usable.sum()), rule, list(CLASS_NAMES))
    return verdicts


def gate_figures(
    labels: npt.NDArray[np.int64],
    reference_probs: npt.NDArray[np.float32],
    reduced_probs: npt.NDArray[np.float32],
    reference_flags: npt.NDArray[np.uint16],
    reduced_flags: npt.NDArray[np.uint16],
    folder_schemes: list[list[str]],
    rule: VerdictRule,
) -> dict[str, Any]:
    """The compared figures of one part under both precisions (pure NumPy).

    Args:
        labels: (n,) true classes. reference_probs, reduced_probs: (n, C) probabilities of fp32 and the reduced precision.
        reference_flags, reduced_flags: (n,) QC flags under each. folder_schemes: ways of grouping the n images
            into folders (each a list of n folder names); every folder of every scheme gets a verdict by ``rule``.
    """
    ref_pred, red_pred = reference_probs.argmax(1), reduced_probs.argmax(1)
    ece_ref = expected_calibration_error(reference_probs, labels)
    ece_red = expected_calibration_error(reduced_probs, labels)
    same_verdict = []
    for folders in folder_schemes:
        verdicts_ref = folder_verdicts(folders, ref_pred, reference_flags, rule)
        verdicts_red = folder_verdicts(folders, red_pred, reduced_flags, rule)
        same_verdict += [verdicts_ref[f] == verdicts_red[f] for f in verdicts_ref]
    return {
        "n": len(labels),
        "label_agreement": float(np.mean(ref_pred == red_pred)),
        "accuracy_fp32": float(np.mean(ref_pred == labels)),
        "accuracy_bf16": float(np.mean(red_pred == labels)),
        "ece_fp32": ece_ref,
        "ece_bf16": ece_red,
        "ece_change": abs(ece_red - ece_ref),
        "flag_agreement": float(np.mean(reference_flags == reduced_flags)),
        "flagged_fp32": int((reference_flags != 0).sum()),
        "flagged_bf16": int((reduced_flags != 0).sum()),
        "folders": len(same_verdict),
        "verdict_agreement": float(np.mean(same_verdict)) if same_verdict else 1.0,
        "max_abs_prob_diff": float(np.abs(reduced_probs.astype(np.float64) - reference_probs).max()),
    }


def judge(figures: dict[str, Any], thresholds: GateThresholds | None = None) -> tuple[bool, str]:
    """(accepted?, one line naming each figure against its threshold). A NaN figure compares False: refused."""
    t = thresholds or GateThresholds()
    lab, ece, flag = figures["label_agreement"], figures["ece_change"], figures["flag_agreement"]
    checks = [
        (lab >= t.min_label_agreement, f"labels agree {lab:.4f} (>= {t.min_label_agreement})"),
        (ece <= t.max_ece_change, f"ECE moves {100 * ece:.2f} points (<= {100 * t.max_ece_change:.1f})"),
        (flag >= t.min_flag_agreement, f"QC flags agree {flag:.4f} (>= {t.min_flag_agreement})"),
        (
            figures["verdict_agreement"] >= t.min_verdict_agreement,
            f"folder verdicts agree {figures['verdict_agreement']:.4f} on {figures['folders']} folders (>= {t.min_verdict_agreement})",
        ),
    ]
    failed = [text for ok, text in checks if not ok]
    stated = "; ".join(text for _, text in checks) + f" on {figures['n']} selection images"
    return not failed, ("refused: " if failed else "accepted: ") + stated


def verdict_record(
    figures: dict[str, Any], device: str, thresholds: GateThresholds | None = None, runtime_margin: float = 1.5
) -> dict[str, Any]:
    """The ``validation.openvino_bf16`` entry: verdict, figures, thresholds and the runtime check's bound.

    ``runtime_max_abs_prob_diff``: max(0.02, ``runtime_margin`` x the largest probability move measured here): the
    backend's check on the user's CPU (8 demo images) refuses bf16 when it moves probabilities more than that,
    i.e. when that CPU's bf16 kernels behave unlike the ones measured.
    """
    t = thresholds or GateThresholds()
    accepted, reason = judge(figures, t)
    return {
        **figures,
        "argmax_agreement": figures["label_agreement"],
        "accepted": accepted,
        "reason": reason,
        "gate": GATE_NAME,
        "thresholds": asdict(t),
        "runtime_max_abs_prob_diff": round(max(FP16_MAX_ABS_PROB_DIFF, runtime_margin * float(figures["max_abs_prob_diff"])), 4),
        "part": "selection",
        "reference": "OpenVINO fp32",
        "device": device,
    }
