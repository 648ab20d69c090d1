"""Evaluation metrics against hand-computed values (confusion, per class, macro, screening, AUC)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from allbatch import CLASS_NAMES
from allbatch.evaluation.metrics import (
    average_ranks,
    confusion_matrix,
    metrics_from_confusion,
    multiclass_metrics,
    roc_auc,
    screening_metrics,
)

# 8 images of Benign, Early, Pre; none of Pro (zero support, never predicted).
TRUTH = np.array([0, 0, 0, 1, 1, 2, 2, 2])
PRED = np.array([0, 0, 1, 1, 2, 2, 2, 0])


def test_confusion_matrix_rows_are_truth_columns_predicted() -> None:
    cm = confusion_matrix(TRUTH, PRED, 4)
    expected = [[2, 1, 0, 0], [0, 1, 1, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    assert cm.dtype == np.int64
    assert cm.tolist() == expected


def test_confusion_matrix_rejects_out_of_range_and_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="class indices"):
        confusion_matrix([0, 4], [0, 1], 4)
    with pytest.raises(ValueError, match="class indices"):
        confusion_matrix([0, 1], [-1, 1], 4)
    with pytest.raises(ValueError, match="equal length"):
        confusion_matrix([0, 1], [0], 4)


def test_per_class_and_macro_with_a_zero_support_class() -> None:
    m = multiclass_metrics(TRUTH, PRED, CLASS_NAMES)
    assert m.n == 8
    assert m.accuracy == pytest.approx(5 / 8)
    benign, early, pre, pro = m.per_class
    assert (benign.tp, benign.fp, benign.fn, benign.tn, benign.support, benign.predicted) == (2, 1, 1, 4, 3, 3)
    assert benign.precision == pytest.approx(2 / 3)
    assert benign.sensitivity == pytest.approx(2 / 3)
    assert benign.specificity == pytest.approx(4 / 5)
    assert benign.f1 == pytest.approx(2 / 3)
    assert (early.tp, early.fp, early.fn, early.tn) == (1, 1, 1, 5)
    assert (early.precision, early.sensitivity, early.f1) == pytest.approx((0.5, 0.5, 0.5))
    assert early.specificity == pytest.approx(5 / 6)
    assert (pre.precision, pre.sensitivity, pre.specificity, pre.f1) == pytest.approx((2 / 3, 2 / 3, 0.8, 2 / 3))
    # Pro: no images and never predicted -> precision, sensitivity, F1 undefined; specificity 8/8.
    assert pro.support == 0 and pro.predicted == 0
    assert math.isnan(pro.precision) and math.isnan(pro.sensitivity) and math.isnan(pro.f1)
    assert pro.specificity == 1.0
    # Macro averages over the classes where each value is defined.
    assert m.macro_precision == pytest.approx(11 / 18)
    assert m.macro_sensitivity == pytest.approx(11 / 18)
    assert m.macro_f1 == pytest.approx(11 / 18)
    assert m.macro_specificity == pytest.approx(103 / 120)
    assert any("Pro: no images" in note for note in m.notes)
    assert any("Pro: never predicted" in note for note in m.notes)
    assert any("macro sensitivity averages the 3 of 4" in note for note in m.notes)


def test_a_class_with_images_but_never_predicted_has_f1_zero() -> None:
    m = multiclass_metrics([0, 1, 1], [0, 0, 0], ["A", "B"])
    a, b = m.per_class
    assert math.isnan(b.precision)
    assert b.sensitivity == 0.0 and b.f1 == 0.0
    assert a.precision == pytest.approx(1 / 3) and a.sensitivity == 1.0 and a.f1 == pytest.approx(0.5)
    assert a.specificity == 0.0  # both B images were called A


def test_empty_input_gives_nan_not_a_crash() -> None:
    m = metrics_from_confusion(np.zeros((4, 4), dtype=np.int64), CLASS_NAMES)
    assert m.n == 0 and math.isnan(m.accuracy) and math.isnan(m.macro_f1)
    assert "no images: accuracy undefined" in m.notes


def test_perfect_predictions() -> None:
    truth = np.array([0, 1, 2, 3, 3])
    m = multiclass_metrics(truth, truth, CLASS_NAMES)
    assert m.accuracy == 1.0
    assert (m.macro_precision, m.macro_sensitivity, m.macro_specificity, m.macro_f1) == (1.0, 1.0, 1.0, 1.0)
    assert m.notes == []


def _probs_with_benign(p_benign: list[float]) -> np.ndarray:
    """(n, 4) probabilities whose Benign column is ``p_benign``; the rest spread over the ALL classes."""
    p = np.asarray(p_benign, dtype=np.float64)
    rest = (1.0 - p)[:, None] / 3.0
    return np.hstack([p[:, None], np.repeat(rest, 3, axis=1)])


def test_imperfect_screening_hand_computed() -> None:
    truth = np.array([0, 0, 1, 2, 3, 3])
    # P(ALL) = 0.1, 0.6, 0.8, 0.4, 0.9, 0.5 -> called ALL: no, yes, yes, no, yes, yes (0.5 counts as ALL)
    probs = _probs_with_benign([0.9, 0.4, 0.2, 0.6, 0.1, 0.5])
    s = screening_metrics(truth, probs, CLASS_NAMES)
    assert (s.tp, s.fn, s.fp, s.tn) == (3, 1, 1, 1)
    assert (s.n_positive, s.n_negative) == (4, 2)
    assert s.sensitivity == pytest.approx(3 / 4)
    assert s.specificity == pytest.approx(1 / 2)
    assert s.accuracy == pytest.approx(4 / 6)
    # positives 0.8, 0.4, 0.9, 0.5 against negatives 0.1, 0.6: 2 + 1 + 2 + 1 = 6 of 8 pairs
    assert s.auc == pytest.approx(6 / 8)
    assert s.positive_classes == ["Early", "Pre", "Pro"] and s.negative_class == "Benign"
    assert s.notes == []


def test_screening_threshold_is_an_option() -> None:
    truth = np.array([0, 0, 1, 2, 3, 3])
    probs = _probs_with_benign([0.9, 0.4, 0.2, 0.6, 0.1, 0.5])
    s = screening_metrics(truth, probs, CLASS_NAMES, threshold=0.65)
    assert (s.tp, s.fn, s.fp, s.tn) == (2, 2, 0, 2)
    assert s.threshold == 0.65
    assert s.auc == pytest.approx(6 / 8)  # AUC does not depend on the threshold


def test_perfect_screening() -> None:
    truth = np.array([0, 0, 1, 2, 3])
    s = screening_metrics(truth, _probs_with_benign([0.95, 0.7, 0.3, 0.01, 0.2]), CLASS_NAMES)
    assert (s.sensitivity, s.specificity, s.accuracy, s.auc) == (1.0, 1.0, 1.0, 1.0)


def test_screening_without_benign_images_is_nan_with_a_note() -> None:
    s = screening_metrics(np.array([1, 2, 3]), _probs_with_benign([0.1, 0.2, 0.7]), CLASS_NAMES)
    assert s.sensitivity == pytest.approx(2 / 3)
    assert math.isnan(s.specificity) and math.isnan(s.auc)
    assert any("no Benign images" in note for note in s.notes)


def test_screening_rejects_bad_shapes_and_unknown_negative_class() -> None:
    with pytest.raises(ValueError, match="probs must be"):
        screening_metrics(np.array([0, 1]), np.zeros((3, 4)), CLASS_NAMES)
    with pytest.raises(ValueError, match="negative class"):
        screening_metrics(np.array([0]), np.zeros((1, 4)), CLASS_NAMES, negative_class="Normal")


def test_average_ranks_share_ties() -> None:
    assert average_ranks([10, 30, 20, 20, 5]).tolist() == [2.0, 5.0, 3.5, 3.5, 1.0]


@pytest.mark.parametrize(
    ("scores", "positive", "expected"),
    [
        ([1, 2, 3, 4], [0, 0, 1, 1], 1.0),
        ([4, 3, 2, 1], [0, 0, 1, 1], 0.0),
        ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),
        ([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0], 0.5),
        ([0.2, 0.5, 0.5, 0.9], [0, 1, 0, 1], 0.875),  # the tied pair counts one half
    ],
)
def test_auc_on_known_ranks(scores: list[float], positive: list[int], expected: float) -> None:
    assert roc_auc(scores, np.array(positive, dtype=bool)) == pytest.approx(expected)


def test_auc_equals_the_pairwise_definition_with_many_ties() -> None:
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 6, size=60).astype(np.float64)  # few distinct values: many ties
    positive = rng.random(60) < 0.4
    pos, neg = scores[positive], scores[~positive]
    pairs = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg)]
    assert roc_auc(scores, positive) == pytest.approx(sum(pairs) / len(pairs))


def test_auc_undefined_for_one_group_and_rejects_nan() -> None:
    assert math.isnan(roc_auc([0.1, 0.2], [True, True]))
    assert math.isnan(roc_auc([], np.array([], dtype=bool)))
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0.1, float("nan")], [True, False])
