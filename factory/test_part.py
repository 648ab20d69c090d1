"""The test part's figures: the headline accuracy of a shipped model, with its 95 % interval.

The test part (``training.split.three_way_split``) is scored once per shipped candidate and decides nothing.
``test_part_record`` builds ``manifest.validation.test_part``: the shape of ``validation.onnx_runtime.plain``
({n, accuracy, confusion (C x C, rows truth), macro_sensitivity, sensitivity}) plus the interval, the split, and
which past choices used these blocks. Other tools read ``test_part.confusion``: keep the key and its shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import beta

from allbatch import CLASS_NAMES
from factory.calibration import expected_calibration_error

INTERVAL_METHOD = "Clopper-Pearson (exact binomial), two-sided 95 %"

CHOSEN_ON_THESE_BLOCKS = (
    "The test part is the shipped model's validation blocks: none of its weights trained on them, but choices were "
    "made on them: the epoch count and the selected epoch, raw vs EMA weights, the logit temperature "
    "(validation.calibration), the quality-control statistics, last-layer heads and whole candidate models (a CPU "
    "fine-tune and head refits were rejected on them) and the OpenVINO bf16 verdict. So the shipped model's test "
    "figure is optimistic; only a model trained and chosen after this split (on train and selection) has an honest one."
)


def clopper_pearson(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval for ``successes`` out of ``n`` at ``level``: (low, high) in [0, 1]."""
    if n <= 0:
        raise ValueError("an interval needs at least one trial")
    tail = (1.0 - level) / 2.0
    low = 0.0 if successes == 0 else float(beta.ppf(tail, successes, n - successes + 1))
    high = 1.0 if successes == n else float(beta.ppf(1.0 - tail, successes + 1, n - successes))
    return low, high


def headline_figures(labels: npt.ArrayLike, probs: npt.ArrayLike) -> dict[str, Any]:
    """Figures of (n, C) ``probs`` against (n,) ``labels``: the plain-validation shape plus intervals and screening rates.

    Returns {n, accuracy, accuracy_ci95 [low, high], confusion (C x C, rows truth, columns predicted),
    macro_sensitivity, sensitivity {class: recall}, sensitivity_ci95 {class: [low, high]}, all_called_all,
    all_called_all_ci95, benign_called_benign, ece (15 bins)}; rates are fractions rounded to 5 places.
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    k = len(CLASS_NAMES)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y, p.argmax(1)), 1)
    correct, n = int(np.trace(confusion)), int(confusion.sum())
    row = confusion.sum(1)
    recall = confusion.diagonal() / np.maximum(row, 1)
    benign = CLASS_NAMES.index("Benign")
    all_rows = [i for i in range(k) if i != benign]
    all_total = int(confusion[all_rows].sum())
    all_as_all = int(confusion[np.ix_(all_rows, all_rows)].sum())

    def interval(successes: int, total: int) -> list[float]:
        return [round(v, 5) for v in clopper_pearson(successes, total)]

    return {
        "n": n,
        "accuracy": round(correct / n, 5),
        "accuracy_ci95": interval(correct, n),
        "confusion": confusion.tolist(),
        "macro_sensitivity": round(float(recall.mean()), 5),
        "sensitivity": {name: round(float(r), 5) for name, r in zip(CLASS_NAMES, recall, strict=True)},
        "sensitivity_ci95": {name: interval(int(confusion[i, i]), int(row[i])) for i, name in enumerate(CLASS_NAMES)},
        "all_called_all": round(all_as_all / max(all_total, 1), 5),
        "all_called_all_ci95": interval(all_as_all, all_total),
        "benign_called_benign": round(float(recall[benign]), 5),
        "ece": round(expected_calibration_error(p, y), 5),
    }
