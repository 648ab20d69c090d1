"""The user-facing reduced-precision gate (factory.precision_gate) and the test part's interval (factory.test_part)."""

from __future__ import annotations

import numpy as np
import pytest

from allbatch.model.manifest import BenignErrors
from allbatch.summarize.groups import VerdictRule
from factory.precision_gate import GateThresholds, folder_verdicts, gate_figures, judge, verdict_record
from factory.test_part import clopper_pearson, headline_figures

RULE = VerdictRule(benign_errors=BenignErrors(errors=2, images=75, source="test"))
"""The run's folder rule at the shipped model's measured Benign->ALL rate (2 of 75)."""


def _case(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    logits = rng.normal(0, 1, (n, 4))
    logits[np.arange(n), labels] += 6.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    flags = np.zeros(n, dtype=np.uint16)
    folders = [f"C{label}/block-{i // 25}" for i, label in enumerate(labels)]
    return labels, probs.astype(np.float32), flags, folders


def test_identical_outputs_are_accepted() -> None:
    labels, probs, flags, folders = _case()
    figures = gate_figures(labels, probs, probs, flags, flags, [folders], RULE)
    accepted, reason = judge(figures)
    assert accepted and reason.startswith("accepted")
    assert figures["label_agreement"] == 1.0 and figures["ece_change"] == 0.0 and figures["verdict_agreement"] == 1.0


def test_large_probability_moves_that_keep_what_users_see_are_accepted() -> None:
    labels, probs, flags, folders = _case()
    labels[0] = 0
    probs[0] = [0.55, 0.15, 0.15, 0.15]
    moved = probs.copy()
    moved[0] = [0.62, 0.13, 0.13, 0.12]  # a 0.07 move on one image, the same class
    figures = gate_figures(labels, probs, moved, flags, flags, [folders], RULE)
    assert figures["max_abs_prob_diff"] > 0.02
    assert judge(figures)[0]


@pytest.mark.parametrize("criterion", ["labels", "ece", "flags", "verdicts"])
def test_each_criterion_alone_refuses(criterion: str) -> None:
    labels, probs, flags, folders = _case()
    reduced, reduced_flags = probs.copy(), flags.copy()
    if criterion == "labels":  # 3 of 400 flipped: 0.9925 < 0.995
        for i in range(3):
            reduced[i] = np.roll(reduced[i], 1)
    elif criterion == "ece":  # every confidence lowered by about 0.1: ECE moves by far more than half a point
        top = reduced.argmax(1)
        reduced[np.arange(len(top)), top] -= 0.1
        reduced[np.arange(len(top)), (top + 1) % 4] += 0.1
    elif criterion == "flags":  # 5 of 400 images newly flagged: 0.9875 < 0.99
        reduced_flags[:5] = 1
    else:  # every image of one folder flagged: it becomes "insufficient"
        first = folders[0]
        reduced_flags[[i for i, f in enumerate(folders) if f == first]] = 1
    figures = gate_figures(labels, probs, reduced, flags, reduced_flags, [folders], RULE)
    if criterion == "verdicts":
        figures["flag_agreement"] = 1.0  # isolate the verdict criterion from the flag share it moved
    accepted, reason = judge(figures)
    assert not accepted and reason.startswith("refused")


def test_folder_verdicts_follow_the_summary_rule() -> None:
    predicted = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 0, 0, 0, 0, 1])
    flags = np.zeros(len(predicted), dtype=np.uint16)
    folders = ["a"] * 5 + ["b"] * 5 + ["c"] + ["d"] * 5
    verdicts = folder_verdicts(folders, predicted, flags, RULE)
    assert verdicts == {"a": "Benign", "b": "ALL, subtype mixed", "c": "insufficient", "d": "Benign"}  # d: 1 ALL vote of 5


def test_verdict_record_states_the_runtime_bound() -> None:
    labels, probs, flags, folders = _case()
    figures = gate_figures(labels, probs, probs, flags, flags, [folders], RULE)
    figures["max_abs_prob_diff"] = 0.07
    record = verdict_record(figures, "cpu (test)")
    assert record["accepted"] is True and record["gate"] and record["runtime_max_abs_prob_diff"] == pytest.approx(0.105)
    assert record["thresholds"] == {
        "min_label_agreement": 0.995,
        "max_ece_change": 0.005,
        "min_flag_agreement": 0.99,
        "min_verdict_agreement": 1.0,
    }
    assert not verdict_record(figures, "cpu", GateThresholds(min_label_agreement=1.01))["accepted"]


def test_clopper_pearson_matches_known_values() -> None:
    low, high = clopper_pearson(0, 10)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 10), rel=1e-9)
    low, high = clopper_pearson(494, 496)
    assert 0.98 < low < 494 / 496 < high < 1.0
    assert clopper_pearson(496, 496)[1] == 1.0


def test_headline_figures_have_the_plain_validation_shape() -> None:
    labels = np.array([0, 0, 1, 1, 2, 3, 3, 3])
    probs = np.eye(4)[[0, 1, 1, 1, 2, 3, 3, 2]].astype(np.float32)
    figures = headline_figures(labels, probs)
    assert {"n", "accuracy", "confusion", "macro_sensitivity", "sensitivity", "accuracy_ci95"} <= figures.keys()
    assert figures["confusion"] == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 1, 2]]
    assert figures["accuracy"] == 0.75 and figures["sensitivity"]["Benign"] == 0.5
    assert figures["all_called_all"] == 1.0 and figures["benign_called_benign"] == 0.5
