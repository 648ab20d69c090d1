"""The int8 accuracy gate: an int8 model is accepted only when it classifies like the fp32 model.

Pure NumPy (``int8_figures``, ``judge_int8``) so it is tested without a quantiser; ``factory/scripts/quantize_int8.py``
quantises the model (OpenVINO NNCF, post-training, calibrated on development images outside the validation
part), measures it on the validation part and applies this gate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

INT8_MIN_LABEL_AGREEMENT = 0.995
"""Share of validation images whose int8 class must equal the fp32 class."""
INT8_MAX_ACCURACY_DROP = 0.002
"""Largest validation accuracy loss allowed (0.2 points; one image in 500)."""


def int8_figures(int8_probs: npt.ArrayLike, fp32_probs: npt.ArrayLike, truth: npt.ArrayLike) -> dict[str, Any]:
    """Label agreement with fp32, both accuracies and the drop, the largest probability difference, on N images.

    Args:
        int8_probs, fp32_probs: (N, C) probabilities of the same images.
        truth: (N,) true class indices.

    Raises:
        ValueError: shapes that do not match, or N = 0.
    """
    low, ref, labels = np.asarray(int8_probs, np.float64), np.asarray(fp32_probs, np.float64), np.asarray(truth)
    if low.ndim != 2 or low.shape != ref.shape or labels.shape != (low.shape[0],) or low.shape[0] == 0:
        raise ValueError(f"int8_figures needs (N, C), (N, C) and (N,) with N > 0, got {low.shape}, {ref.shape}, {labels.shape}")
    finite = bool(np.isfinite(low).all())
    acc_int8 = float(np.mean(low.argmax(1) == labels)) if finite else 0.0
    acc_fp32 = float(np.mean(ref.argmax(1) == labels))
    return {
        "n": int(low.shape[0]),
        "label_agreement": float(np.mean(low.argmax(1) == ref.argmax(1))) if finite else 0.0,
        "accuracy_fp32": acc_fp32,
        "accuracy_int8": acc_int8,
        "accuracy_drop_points": round(100.0 * (acc_fp32 - acc_int8), 4),
        "max_abs_prob_diff": float(np.abs(low - ref).max()) if finite else float("inf"),
    }


def judge_int8(figures: dict[str, Any]) -> tuple[bool, str]:
    """(accepted?, one-line reason with the measured figures) against the documented thresholds."""
    agreement, drop = float(figures["label_agreement"]), float(figures["accuracy_drop_points"])
    accepted = agreement >= INT8_MIN_LABEL_AGREEMENT and drop <= 100.0 * INT8_MAX_ACCURACY_DROP
    reason = (
        f"label agreement with fp32 {agreement:.4f} (>= {INT8_MIN_LABEL_AGREEMENT} needed), validation accuracy "
        f"{figures['accuracy_int8']:.4f} vs fp32 {figures['accuracy_fp32']:.4f}: drop {drop:.2f} points "
        f"(<= {100.0 * INT8_MAX_ACCURACY_DROP:.1f} allowed) on {figures['n']} images"
    )
    return accepted, reason
