"""Calibration: expected calibration error and a logit temperature fitted by negative log-likelihood.

The temperature T divides the network's logits inside the exported graph (``ExportedNet``), so every
backend's ``probs`` are calibrated; it is fitted on the validation part and stored in the manifest
(``model.onnx_io.reexport_artifact(..., temperature=T)``). With beta = 1/T, the mean NLL of
softmax(beta * z) is convex in beta and its derivative, mean(E_p[z] - z_true), increases with beta,
so a bisection on that derivative finds the exact minimum (no optimiser dependency needed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


def softmax(logits: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """(n, k) logits -> (n, k) float64 probabilities (row-wise, numerically stable)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def negative_log_likelihood(logits: npt.ArrayLike, labels: npt.ArrayLike, temperature: float = 1.0) -> float:
    """Mean NLL of softmax(logits / temperature) at the true (n,) int labels."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    y = np.asarray(labels, dtype=np.int64)
    return float(np.mean(log_norm - z[np.arange(len(y)), y]))


def expected_calibration_error(probs: npt.ArrayLike, labels: npt.ArrayLike, n_bins: int = 15) -> float:
    """ECE of the top-class confidence: sum over equal-width bins of |accuracy - mean confidence| x bin share.

    Args:
        probs: (n, k) class probabilities.
        labels: (n,) true class indices.
        n_bins: bins of (0, 1]; a confidence of exactly b/n_bins falls into bin b (right-closed, as in Guo et al. 2017).
    Returns:
        ECE as a fraction (0.02 = 2 %); 0.0 for no samples.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if len(y) == 0:
        return 0.0
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def fit_temperature(
    logits: npt.ArrayLike, labels: npt.ArrayLike, bounds: tuple[float, float] = (0.05, 20.0), iterations: int = 100
) -> float:
    """The temperature T in ``bounds`` minimising the mean NLL of softmax(logits / T) (see module docstring).

    Args:
        logits: (n, k) uncalibrated logits (temperature 1).
        labels: (n,) true class indices.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if len(y) == 0:
        raise ValueError("fit_temperature needs at least one sample")
    true_logit = z[np.arange(len(y)), y]

    def slope(beta: float) -> float:  # d/d beta of the mean NLL at beta = 1/T
        return float(np.mean((softmax(beta * z) * z).sum(axis=1) - true_logit))

    low, high = np.log(1.0 / bounds[1]), np.log(1.0 / bounds[0])  # bisection on log(beta)
    if slope(float(np.exp(low))) >= 0:
        return bounds[1]
    if slope(float(np.exp(high))) <= 0:
        return bounds[0]
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        if slope(float(np.exp(middle))) > 0:
            high = middle
        else:
            low = middle
    return float(1.0 / np.exp(0.5 * (low + high)))


@dataclass(frozen=True)
class CalibrationReport:
    """Calibration of one model on one labelled set, before and after the fitted temperature."""

    n: int
    n_bins: int
    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    share_correct_below_0_9_before: float
    share_correct_below_0_9_after: float

    def to_dict(self) -> dict[str, Any]:
        return {key: round(value, 5) if isinstance(value, float) else value for key, value in asdict(self).items()}


def calibrate(logits: npt.ArrayLike, labels: npt.ArrayLike, n_bins: int = 15) -> CalibrationReport:
    """Fit a temperature on (n, k) temperature-1 ``logits`` and report ECE / NLL before and after it."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    temperature = fit_temperature(z, y)

    def low_confidence_correct(probs: npt.NDArray[np.float64]) -> float:
        correct = probs.argmax(axis=1) == y
        return float((probs.max(axis=1)[correct] < 0.9).mean()) if correct.any() else 0.0

    before, after = softmax(z), softmax(z / temperature)
    return CalibrationReport(
        n=len(y),
        n_bins=n_bins,
        temperature=temperature,
        ece_before=expected_calibration_error(before, y, n_bins),
        ece_after=expected_calibration_error(after, y, n_bins),
        nll_before=negative_log_likelihood(z, y),
        nll_after=negative_log_likelihood(z, y, temperature),
        share_correct_below_0_9_before=low_confidence_correct(before),
        share_correct_below_0_9_after=low_confidence_correct(after),
    )
