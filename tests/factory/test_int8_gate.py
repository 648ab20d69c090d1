"""The int8 accuracy gate on probability tables: agreement with fp32, accuracy drop, and the verdict."""

from __future__ import annotations

import numpy as np
import pytest

from factory.int8_gate import int8_figures, judge_int8


def one_hot(labels: list[int], k: int = 4) -> np.ndarray:
    probs = np.full((len(labels), k), 0.02, np.float32)
    probs[np.arange(len(labels)), labels] = 0.94
    return probs


def test_identical_labels_are_accepted() -> None:
    truth = [0, 1, 2, 3] * 50
    figures = int8_figures(one_hot(truth), one_hot(truth), truth)
    assert figures["label_agreement"] == 1.0 and figures["accuracy_drop_points"] == 0.0 and figures["n"] == 200
    accepted, reason = judge_int8(figures)
    assert accepted and "label agreement with fp32 1.0000" in reason


def test_one_flip_in_500_is_accepted_two_that_cost_accuracy_are_refused() -> None:
    truth = [0, 1, 2, 3] * 125
    fp32 = one_hot(truth)
    one = list(truth)
    one[0] = 1  # a correct fp32 label turned wrong: agreement 0.998, accuracy drop 0.2 points
    assert judge_int8(int8_figures(one_hot(one), fp32, truth))[0] is True
    two = list(one)
    two[1] = 0
    figures = int8_figures(one_hot(two), fp32, truth)
    accepted, reason = judge_int8(figures)
    assert not accepted and figures["accuracy_drop_points"] == pytest.approx(0.4)
    assert "drop 0.40 points (<= 0.2 allowed)" in reason


def test_agreement_alone_can_refuse() -> None:
    """Flips that happen to keep the accuracy (wrong -> another wrong) still count against agreement."""
    truth = [0] * 100
    fp32 = one_hot([1] * 10 + [0] * 90)
    int8 = one_hot([2] * 10 + [0] * 90)
    figures = int8_figures(int8, fp32, truth)
    assert figures["accuracy_drop_points"] == 0.0 and figures["label_agreement"] == 0.9
    assert judge_int8(figures)[0] is False


def test_non_finite_outputs_and_bad_shapes() -> None:
    truth = [0, 1]
    broken = one_hot(truth)
    broken[0, 0] = np.nan
    assert judge_int8(int8_figures(broken, one_hot(truth), truth))[0] is False
    with pytest.raises(ValueError, match="needs"):
        int8_figures(one_hot(truth), one_hot([0]), truth)
