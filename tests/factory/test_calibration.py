"""ECE (15 bins) and the NLL temperature fit."""

from __future__ import annotations

import numpy as np
import pytest

from factory.calibration import calibrate, expected_calibration_error, fit_temperature, negative_log_likelihood, softmax


def test_ece_by_hand() -> None:
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])
    # bin of 0.95: accuracy 0.5, confidence 0.95 -> 0.45 x 1/2; bin of 0.6: accuracy 1, confidence 0.6 -> 0.4 x 1/2
    assert expected_calibration_error(probs, labels, 15) == pytest.approx(0.425)
    assert expected_calibration_error(np.eye(3), np.arange(3)) == pytest.approx(0.0)
    assert expected_calibration_error(np.zeros((0, 3)), np.zeros(0)) == 0.0


def test_fit_temperature_recovers_the_generating_temperature() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, size=(20000, 4))
    true_t = 2.5
    p = softmax(logits / true_t)
    labels = (p.cumsum(axis=1) > rng.random((len(p), 1))).argmax(axis=1)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_t, rel=0.05)
    nll = negative_log_likelihood(logits, labels, fitted)
    assert nll <= negative_log_likelihood(logits, labels, fitted * 1.1) and nll <= negative_log_likelihood(logits, labels, fitted / 1.1)


def test_calibrate_reports_before_and_after() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 2000)
    logits = rng.normal(0, 1, (2000, 4))
    logits[np.arange(2000), labels] += 1.5
    overconfident = 6.0 * logits
    report = calibrate(overconfident, labels)
    assert report.temperature > 3.0
    assert report.ece_after < report.ece_before and report.nll_after < report.nll_before
    assert report.to_dict()["n"] == 2000 and report.n_bins == 15
    with pytest.raises(ValueError, match="at least one sample"):
        fit_temperature(np.zeros((0, 4)), np.zeros(0, int))
