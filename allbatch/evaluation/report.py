"""Present an ``EvaluationResult``: rich tables for the terminal, a JSON-safe dict, a confusion-matrix PNG."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text

from allbatch.core.errors import AllbatchError, UserInputError
from allbatch.core.safe_text import printable
from allbatch.evaluation.evaluate import EvaluationResult, ReviewedImage

MAX_LISTED = 10
"""Failed or unlabelled paths shown in the terminal; the JSON lists them all."""


def _fmt(value: float, percent: bool = True) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{100 * value:.1f}%" if percent else f"{value:.3f}"


def metrics_table(result: EvaluationResult) -> Table:
    """Per class, the macro average, accuracy, and the ALL-vs-benign screening view in one table."""
    mc, sc = result.multiclass, result.screening
    table = Table(
        title=f"allbatch eval: {mc.n} images from {result.results_path or 'results'} against {result.label_source}", title_justify="left"
    )
    table.add_column("Class")
    for column in ("Support", "Precision", "Sensitivity", "Specificity", "F1"):
        table.add_column(column, justify="right")
    for m in mc.per_class:
        table.add_row(m.name, str(m.support), _fmt(m.precision), _fmt(m.sensitivity), _fmt(m.specificity), _fmt(m.f1))
    table.add_section()
    table.add_row(
        "macro average",
        str(mc.n),
        _fmt(mc.macro_precision),
        _fmt(mc.macro_sensitivity),
        _fmt(mc.macro_specificity),
        _fmt(mc.macro_f1),
        style="bold",
    )
    table.add_row("accuracy", str(mc.n), "", _fmt(mc.accuracy), "", "", style="bold")
    table.add_section()
    table.add_row(
        f"screening ALL vs {sc.negative_class}\nP(ALL) >= {sc.threshold:g}, AUC {_fmt(sc.auc, percent=False)}",
        f"{sc.n_positive}+ / {sc.n_negative}-",
        "",
        _fmt(sc.sensitivity),
        _fmt(sc.specificity),
        f"acc {_fmt(sc.accuracy)}",
    )
    return table


def confusion_table(result: EvaluationResult) -> Table:
    """The confusion matrix: rows true class, columns predicted class, the diagonal in bold."""
    names = result.multiclass.class_names
    table = Table(title="confusion (rows: truth, columns: predicted)", title_justify="left")
    table.add_column("truth \\ pred")
    for name in names:
        table.add_column(name, justify="right")
    for i, name in enumerate(names):
        cells = [f"[bold]{v}[/]" if i == j else str(v) for j, v in enumerate(result.multiclass.confusion[i].tolist())]
        table.add_row(name, *cells)
    return table


def _images(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


def _listing(title: str, lines: list[str], total: int) -> Text:
    text = Text(title, style="yellow")
    for line in lines[:MAX_LISTED]:
        text.append(f"\n  {printable(line)}", style="default")  # file names: no control characters reach the terminal
    if total > MAX_LISTED:
        text.append(f"\n  ... and {total - MAX_LISTED} more (all listed in --json)", style="default")
    return text


def render_report(result: EvaluationResult) -> Group:
    """Metrics table, confusion table, then failed and unlabelled images and notes, for a rich Console."""
    parts: list[Any] = [metrics_table(result), confusion_table(result)]
    if result.misclassified:
        parts.append(
            _listing(
                f"{_images(len(result.misclassified))} misclassified (truth -> predicted, confidence, quality):",
                [f"{m.truth} -> {m.predicted}  {m.confidence:.2f}  {m.reason}  {m.path}" for m in result.misclassified],
                len(result.misclassified),
            )
        )
    if result.flagged:
        wrong = sum(1 for m in result.flagged if m.truth != m.predicted)
        parts.append(
            _listing(
                f"{_images(len(result.flagged))} flagged by quality control ({wrong} of them misclassified):",
                [f"{m.reason:>12}  {m.truth} -> {m.predicted}  {m.confidence:.2f}  {m.path}" for m in result.flagged],
                len(result.flagged),
            )
        )
    if result.failed:
        parts.append(
            _listing(
                f"{_images(len(result.failed))} failed in the run and not evaluated:",
                [f"{f.status}  {f.path}  {f.error}" for f in result.failed],
                len(result.failed),
            )
        )
    if result.not_a_smear:
        parts.append(
            _listing(
                f"{_images(len(result.not_a_smear))} flagged as not a smear (small, blurred or off-colour), not evaluated "
                "(--include-not-a-smear evaluates them):",
                result.not_a_smear,
                len(result.not_a_smear),
            )
        )
    if result.unlabelled and result.label_source != "folder names":
        parts.append(
            _listing(
                f"{_images(len(result.unlabelled))} without a row in the {result.label_source}, not evaluated:",
                result.unlabelled,
                len(result.unlabelled),
            )
        )
    elif result.unlabelled:
        folders = ", ".join(f"{name!r} ({count})" for name, count in sorted(result.unlabelled_folders.items()))
        parts.append(
            _listing(
                f"{_images(len(result.unlabelled))} in folders that name no class, not evaluated: {folders}; "
                f"map a folder with --class-map '{min(result.unlabelled_folders)}=Class' or give --labels labels.csv",
                result.unlabelled,
                len(result.unlabelled),
            )
        )
    if result.notes:
        parts.append(Text("notes: " + "; ".join(result.notes), style="dim"))
    return Group(*parts)


def _num(value: float) -> float | None:
    """JSON has no NaN: undefined values become null (the notes say why)."""
    return None if math.isnan(value) else float(value)


def _reviewed(image: ReviewedImage) -> dict[str, Any]:
    return {
        "path": image.path,
        "truth": image.truth,
        "predicted": image.predicted,
        "confidence": _num(image.confidence),
        "flags": image.flags,
        "reason": image.reason,
    }


def to_json(result: EvaluationResult) -> dict[str, Any]:
    """The whole evaluation as a JSON-serialisable dict (undefined ratios are null)."""
    mc, sc = result.multiclass, result.screening
    return {
        "results": result.results_path,
        "class_names": list(mc.class_names),
        "counts": {
            "rows": result.n_rows,
            "evaluated": mc.n,
            "failed": len(result.failed),
            "unlabelled": len(result.unlabelled),
            "misclassified": len(result.misclassified),
            "flagged": len(result.flagged),
            "not_a_smear": len(result.not_a_smear),
        },
        "labels": result.label_source,
        "accuracy": _num(mc.accuracy),
        "confusion": {"rows": "truth", "columns": "predicted", "matrix": mc.confusion.tolist()},
        "per_class": {
            m.name: {
                "support": m.support,
                "predicted": m.predicted,
                "tp": m.tp,
                "fp": m.fp,
                "fn": m.fn,
                "tn": m.tn,
                "precision": _num(m.precision),
                "sensitivity": _num(m.sensitivity),
                "specificity": _num(m.specificity),
                "f1": _num(m.f1),
            }
            for m in mc.per_class
        },
        "macro": {
            "precision": _num(mc.macro_precision),
            "sensitivity": _num(mc.macro_sensitivity),
            "specificity": _num(mc.macro_specificity),
            "f1": _num(mc.macro_f1),
        },
        "screening": {
            "positive_classes": sc.positive_classes,
            "negative_class": sc.negative_class,
            "score": f"P(ALL) = 1 - P({sc.negative_class})",
            "threshold": sc.threshold,
            "n_positive": sc.n_positive,
            "n_negative": sc.n_negative,
            "tp": sc.tp,
            "fp": sc.fp,
            "fn": sc.fn,
            "tn": sc.tn,
            "sensitivity": _num(sc.sensitivity),
            "specificity": _num(sc.specificity),
            "accuracy": _num(sc.accuracy),
            "auc": _num(sc.auc),
        },
        "folders": {
            name: {"class": result.folder_classes.get(name), "images": count} for name, count in sorted(result.folder_counts.items())
        },
        "failed": [{"path": f.path, "status": f.status, "error": f.error} for f in result.failed],
        "misclassified": [_reviewed(m) for m in result.misclassified],
        "flagged": [_reviewed(m) for m in result.flagged],
        "unlabelled": {"folders": dict(sorted(result.unlabelled_folders.items())), "paths": list(result.unlabelled)},
        "not_a_smear": list(result.not_a_smear),
        "notes": result.notes,
    }


PNG_EXTRA_HINT = "pip install matplotlib, or pip install 'allbatch[plots]'"


def png_unavailable_reason() -> str | None:
    """None when the confusion-matrix PNG can be drawn here; otherwise why not, with the install hint.
    The PNG is optional: the core install has no matplotlib."""
    try:
        from matplotlib.figure import Figure  # noqa: F401 - only checking that it imports
    except ImportError:
        return f"matplotlib is not installed ({PNG_EXTRA_HINT})"
    return None


def save_confusion_png(result: EvaluationResult, path: Path) -> Path:
    """Write the confusion matrix as a PNG: counts and row percentages in the cells, class names on
    both axes, accuracy and screening numbers in the title. Returns ``path``.

    Raises AllbatchError when matplotlib is not installed, UserInputError when ``path`` cannot be written.
    """
    try:
        # A bare Figure (not pyplot): no global backend switch, no window, nothing left open.
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise AllbatchError(f"the confusion-matrix PNG needs matplotlib: {PNG_EXTRA_HINT} (or pass --no-png)") from exc
    mc, sc = result.multiclass, result.screening
    cm = mc.confusion
    k = len(mc.class_names)
    support = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, support, out=np.zeros(cm.shape, dtype=np.float64), where=support > 0)
    fig = Figure(figsize=(1.6 * k + 2.4, 1.4 * k + 2.2), dpi=120)
    ax = fig.subplots()
    ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            dark = share[i, j] > 0.55
            ax.text(
                j,
                i,
                f"{cm[i, j]}\n{100 * share[i, j]:.0f}%" if support[i, 0] else "0",
                ha="center",
                va="center",
                fontsize=11,
                fontweight="bold" if i == j else "normal",
                color="white" if dark else "black",
            )
    ax.set_xticks(range(k), mc.class_names)
    ax.set_yticks(range(k), [f"{name}\n(n={int(support[i, 0])})" for i, name in enumerate(mc.class_names)])
    ax.set_xlabel("predicted class    (cells: images, % of the true class)")
    ax.set_ylabel("true class (folder)")
    ax.set_title(
        f"{Path(result.results_path).name or 'results'}: accuracy {_fmt(mc.accuracy)} on {mc.n} images\n"
        f"ALL vs {sc.negative_class}: sens {_fmt(sc.sensitivity)}, spec {_fmt(sc.specificity)}, "
        f"AUC {_fmt(sc.auc, percent=False)}",
        fontsize=10,
    )
    fig.tight_layout()
    path = Path(path)
    try:
        fig.savefig(path)
    except OSError as exc:
        raise UserInputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path
