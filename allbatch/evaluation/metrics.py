"""Classification metrics on plain NumPy arrays (host memory; no scikit-learn).

A ratio whose denominator is zero (a class with no images, a class never predicted, a screening
set without benign images) is NaN, and a note says why; nothing here raises for such data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

NAN = float("nan")


def _ratio(num: int, den: int) -> float:
    return num / den if den else NAN


def confusion_matrix(truth: npt.ArrayLike, pred: npt.ArrayLike, n_classes: int) -> npt.NDArray[np.int64]:
    """(k, k) int64 counts, rows = true class, columns = predicted class.

    truth, pred: (n,) integer class indices in [0, k). ValueError on other values or shapes.
    """
    t = np.asarray(truth)
    p = np.asarray(pred)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"truth and pred must be 1-D of equal length, got {t.shape} and {p.shape}")
    for name, a in (("truth", t), ("pred", p)):
        if a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() >= n_classes):
            raise ValueError(f"{name} must hold class indices in [0, {n_classes})")
    flat = np.bincount(t.astype(np.int64) * n_classes + p.astype(np.int64), minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


@dataclass(frozen=True)
class ClassMetrics:
    """One class against the rest. support = true images of the class, predicted = images called it."""

    name: str
    support: int
    predicted: int
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float
    sensitivity: float
    specificity: float
    f1: float


@dataclass(frozen=True)
class MulticlassMetrics:
    """Metrics of one k-class confusion matrix. Macro values average the classes where defined."""

    class_names: list[str]
    confusion: npt.NDArray[np.int64]
    n: int
    accuracy: float
    per_class: list[ClassMetrics]
    macro_precision: float
    macro_sensitivity: float
    macro_specificity: float
    macro_f1: float
    notes: list[str] = field(default_factory=list)


def metrics_from_confusion(confusion: npt.NDArray[np.int64], class_names: Sequence[str]) -> MulticlassMetrics:
    """Per-class precision, sensitivity (recall), specificity, F1 and support, their macro averages
    and accuracy, from a (k, k) confusion matrix (rows truth, columns predicted).

    F1 is 2TP / (2TP + FP + FN), which equals the harmonic mean of precision and sensitivity when
    both exist and is 0 (not undefined) for a class that is predicted but has no images.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"confusion must be ({k}, {k}) for {k} class names, got {cm.shape}")
    n = int(cm.sum())
    notes: list[str] = []
    per_class: list[ClassMetrics] = []
    for i, name in enumerate(class_names):
        tp = int(cm[i, i])
        support = int(cm[i].sum())
        predicted = int(cm[:, i].sum())
        fn, fp = support - tp, predicted - tp
        tn = n - tp - fn - fp
        m = ClassMetrics(
            name=name,
            support=support,
            predicted=predicted,
            tp=tp,
            fp=fp,
            fn=fn,
            tn=tn,
            precision=_ratio(tp, predicted),
            sensitivity=_ratio(tp, support),
            specificity=_ratio(tn, tn + fp),
            f1=_ratio(2 * tp, 2 * tp + fp + fn),
        )
        if support == 0:
            notes.append(f"{name}: no images of this class, sensitivity undefined")
        if predicted == 0:
            notes.append(f"{name}: never predicted, precision undefined")
        if tn + fp == 0:
            notes.append(f"{name}: no images of other classes, specificity undefined")
        per_class.append(m)
    if n == 0:
        notes.append("no images: accuracy undefined")

    def macro(attr: str) -> float:
        values = np.array([getattr(m, attr) for m in per_class], dtype=np.float64)
        defined = ~np.isnan(values)
        if not defined.any():
            return NAN
        if not defined.all():
            notes.append(f"macro {attr} averages the {int(defined.sum())} of {k} classes where it is defined")
        return float(values[defined].mean())

    return MulticlassMetrics(
        class_names=list(class_names),
        confusion=cm,
        n=n,
        accuracy=_ratio(int(np.trace(cm)), n),
        per_class=per_class,
        macro_precision=macro("precision"),
        macro_sensitivity=macro("sensitivity"),
        macro_specificity=macro("specificity"),
        macro_f1=macro("f1"),
        notes=notes,
    )


def multiclass_metrics(truth: npt.ArrayLike, pred: npt.ArrayLike, class_names: Sequence[str]) -> MulticlassMetrics:
    """``metrics_from_confusion`` of the confusion matrix of (n,) class indices ``truth`` and ``pred``."""
    return metrics_from_confusion(confusion_matrix(truth, pred, len(class_names)), class_names)


def average_ranks(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """(n,) float64 1-based ranks of ``values`` (n,), ties given the mean of the ranks they span."""
    v = np.asarray(values)
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts + 1  # 1-based rank of each distinct value's first occurrence
    return (first + (counts - 1) / 2.0)[inverse.reshape(-1)].astype(np.float64)


def roc_auc(scores: npt.ArrayLike, positive: npt.ArrayLike) -> float:
    """Area under the ROC curve of ``scores`` (n,) float for the (n,) bool ``positive``.

    Rank-based (Mann-Whitney U / (n_pos * n_neg)): the probability that a random positive scores
    higher than a random negative, ties counting one half. NaN when either group is empty.
    ValueError on NaN scores or mismatched shapes.
    """
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=np.bool_)
    if s.shape != pos.shape or s.ndim != 1:
        raise ValueError(f"scores and positive must be 1-D of equal length, got {s.shape} and {pos.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    n_pos = int(pos.sum())
    n_neg = int(pos.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return NAN
    rank_sum = float(average_ranks(s)[pos].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


@dataclass(frozen=True)
class ScreeningMetrics:
    """Two-class screening: positive = any leukaemia class (ALL), negative = the benign class.

    An image screens positive when its score P(ALL) = 1 - P(benign) is >= ``threshold``.
    """

    threshold: float
    negative_class: str
    positive_classes: list[str]
    n_positive: int
    n_negative: int
    tp: int
    fp: int
    fn: int
    tn: int
    sensitivity: float
    specificity: float
    accuracy: float
    auc: float
    notes: list[str] = field(default_factory=list)


def screening_metrics(
    truth: npt.ArrayLike,
    probs: npt.ArrayLike,
    class_names: Sequence[str],
    *,
    negative_class: str = "Benign",
    threshold: float = 0.5,
) -> ScreeningMetrics:
    """ALL-versus-benign screening from (n,) true class indices and (n, k) float class probabilities.

    Sensitivity, specificity and accuracy at ``threshold`` on P(ALL) = 1 - P(negative_class), and
    the ROC AUC of P(ALL) over all thresholds. ValueError if ``negative_class`` is not a class.
    """
    if negative_class not in class_names:
        raise ValueError(f"negative class {negative_class!r} is not one of {list(class_names)}")
    neg = list(class_names).index(negative_class)
    t = np.asarray(truth)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape != (t.shape[0], len(class_names)):
        raise ValueError(f"probs must be (n, {len(class_names)}) for {t.shape[0]} truth values, got {p.shape}")
    score = 1.0 - p[:, neg]
    actual = t != neg
    called = score >= threshold
    tp = int((actual & called).sum())
    fn = int((actual & ~called).sum())
    fp = int((~actual & called).sum())
    tn = int((~actual & ~called).sum())
    notes: list[str] = []
    if tp + fn == 0:
        notes.append("screening: no ALL images, sensitivity and AUC undefined")
    if tn + fp == 0:
        notes.append(f"screening: no {negative_class} images, specificity and AUC undefined")
    return ScreeningMetrics(
        threshold=float(threshold),
        negative_class=negative_class,
        positive_classes=[c for c in class_names if c != negative_class],
        n_positive=tp + fn,
        n_negative=tn + fp,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        sensitivity=_ratio(tp, tp + fn),
        specificity=_ratio(tn, tn + fp),
        accuracy=_ratio(tp + tn, t.shape[0]),
        auc=roc_auc(score, actual),
        notes=notes,
    )
