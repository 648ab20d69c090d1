"""Evaluate a results file against folder-name labels or a labels file: which rows count, and their metrics.

Every committed, live row lands in exactly one group: failed (the run could not classify it), not a smear
(flagged small, blurred or off-colour: ``qc.flags.NOT_A_SMEAR``; evaluated only when asked), unlabelled
(no label for it), or evaluated. The others are counted and listed, never dropped silently.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from allbatch import CLASS_NAMES
from allbatch.core.errors import ResultsFileError, UserInputError
from allbatch.core.status import ImageStatus, status_name
from allbatch.evaluation.labels import LabelAssignment, assign_labels, folder_of, match_labels, parse_class_map, read_labels_file
from allbatch.evaluation.metrics import MulticlassMetrics, ScreeningMetrics, multiclass_metrics, screening_metrics
from allbatch.qc.flags import not_a_smear_mask, reason
from allbatch.results.reader import ResultsTable, read_results

log = logging.getLogger("allbatch.evaluation")


@dataclass(frozen=True)
class EvalConfig:
    """What ``evaluate_results`` does.

    class_map: user entries, each ``FOLDER=Class`` or the path of a JSON file (see ``parse_class_map``);
    they take precedence over the built-in folder names. threshold: on P(ALL) for the screening view.
    labels_file: a CSV of ``path or file name, class`` rows (``labels.read_labels_file``) used instead of the
    folder names. include_not_a_smear: evaluate the images flagged as not a smear too (left out by default).
    """

    labels_from_folders: bool = True
    class_map: tuple[str, ...] = ()
    threshold: float = 0.5
    negative_class: str = "Benign"
    labels_file: Path | None = None
    include_not_a_smear: bool = False


@dataclass(frozen=True)
class FailedImage:
    """A row the run could not classify: its path, status name (``decode_error``...) and message."""

    path: str
    status: str
    error: str


@dataclass(frozen=True)
class ReviewedImage:
    """An evaluated image worth a look: misclassified and/or flagged by quality control.

    truth, predicted: class names. confidence: probability of the predicted class. flags: /qc/flags
    bits; reason: the one-word reason ("ok" when unflagged).
    """

    path: str
    truth: str
    predicted: str
    confidence: float
    flags: int
    reason: str


@dataclass
class EvaluationResult:
    """Everything ``allbatch eval`` reports.

    n_rows: live committed rows read. evaluated: paths that entered the metrics, in file order.
    unlabelled: paths whose folder maps to no class; unlabelled_folders: those folders -> count.
    folder_classes: every folder of an ok image -> its class (None when unknown), with ``folder_counts``.
    """

    results_path: str
    class_names: list[str]
    threshold: float
    n_rows: int
    evaluated: list[str]
    failed: list[FailedImage]
    unlabelled: list[str]
    unlabelled_folders: dict[str, int]
    folder_classes: dict[str, str | None]
    folder_counts: dict[str, int]
    multiclass: MulticlassMetrics
    screening: ScreeningMetrics
    misclassified: list[ReviewedImage] = field(default_factory=list)
    """Evaluated images whose prediction differs from the folder's class, in file order."""
    flagged: list[ReviewedImage] = field(default_factory=list)
    """Evaluated images with a quality flag, in file order (they still count in the metrics)."""
    not_a_smear: list[str] = field(default_factory=list)
    """Ok images flagged as not a smear and left out of the metrics (empty when ``include_not_a_smear``)."""
    label_source: str = "folder names"
    """Where the truth came from: "folder names" or "labels file <path>"."""

    @property
    def notes(self) -> list[str]:
        return [*self.multiclass.notes, *self.screening.notes]


def evaluate_table(table: ResultsTable, config: EvalConfig, results_path: str = "") -> EvaluationResult:
    """Metrics of the ok rows of ``table`` that have a label (from ``config.labels_file``, else the folder names),
    leaving out the images flagged as not a smear unless ``config.include_not_a_smear``.

    Raises:
        UserInputError: no label source, a bad threshold, a bad labels file (unknown class, a name that matches no
        image or several), or no row could be labelled.
        ResultsFileError: an ok row without a valid prediction (a damaged or foreign file).
    """
    if config.labels_file is not None and config.class_map:
        raise UserInputError("--labels and --class-map exclude each other: a labels file names every image's class")
    if config.labels_file is None and not config.labels_from_folders:
        raise UserInputError("allbatch eval needs truth labels: give --labels labels.csv, or keep the folder names (--labels-from-folders)")
    if not 0.0 <= config.threshold <= 1.0:
        raise UserInputError(f"--threshold must be within [0, 1], got {config.threshold}")
    class_names = list(table.class_names) or list(CLASS_NAMES)
    if config.negative_class not in class_names:
        raise ResultsFileError(f"{results_path}: classes {class_names} have no {config.negative_class!r} class to screen against")
    n_classes = len(class_names)
    if table.probs.shape != (len(table), n_classes):
        raise ResultsFileError(f"{results_path}: probabilities have shape {table.probs.shape}, expected ({len(table)}, {n_classes})")

    ok_all = table.status == ImageStatus.OK
    junk = ok_all & not_a_smear_mask(table.flags) & (not config.include_not_a_smear)
    ok = ok_all & ~junk
    failed = [FailedImage(str(table.paths[i]), status_name(int(table.status[i])), str(table.errors[i])) for i in np.flatnonzero(~ok_all)]
    input_root = table.attrs.get("input_root")
    root_text = input_root if isinstance(input_root, str) else None
    ok_paths = [str(p) for p in table.paths[ok]]
    if config.labels_file is not None:
        entries = read_labels_file(config.labels_file, class_names)
        every = match_labels(entries, [str(p) for p in table.paths], class_names, where=f"--labels {config.labels_file}")
        labels = _file_assignment(every[ok], ok_paths, class_names, root_text)
        source = f"labels file {config.labels_file}"
    else:
        labels = assign_labels(
            ok_paths, class_names, user_map=parse_class_map(config.class_map, class_names), use_defaults=True, input_root=root_text
        )
        source = "folder names"
    labelled = labels.truth >= 0
    unlabelled = [p for p, keep in zip(ok_paths, labelled.tolist(), strict=True) if not keep]
    unlabelled_folders = dict(Counter(f for f, keep in zip(labels.folders, labelled.tolist(), strict=True) if not keep))
    if not labelled.any():
        if config.labels_file is not None:
            raise UserInputError(
                f"no evaluable image in {results_path or 'the results'} has a label in {config.labels_file} "
                f"({len(ok_paths)} ok images, {int(junk.sum())} not a smear, {len(failed)} failed)"
            )
        known = ", ".join(repr(f) for f in sorted(labels.folder_classes)[:8]) or "none"
        raise UserInputError(
            f"no image in {results_path or 'the results'} could be labelled from its folder name "
            f"({len(ok_paths)} ok images, {len(failed)} failed; folders: {known}); "
            "map folders with --class-map 'FOLDER=Class', or give every image's class with --labels labels.csv"
        )

    truth = labels.truth[labelled]
    pred = table.labels[ok][labelled].astype(np.int64)
    probs = table.probs[ok][labelled]
    bad = (pred < 0) | (pred >= n_classes) | np.isnan(probs).any(axis=1)
    if bad.any():
        first = next(p for p, b in zip(np.array(ok_paths, dtype=object)[labelled], bad.tolist(), strict=True) if b)
        raise ResultsFileError(f"{results_path}: {int(bad.sum())} ok rows have no valid prediction (first: {first}); the file is damaged")
    log.debug("%s: %d evaluated, %d failed, %d unlabelled", results_path, int(labelled.sum()), len(failed), len(unlabelled))
    flags = table.flags[ok][labelled].astype(np.int64)
    evaluated_paths = np.array(ok_paths, dtype=object)[labelled]
    reviewed = [
        ReviewedImage(
            str(evaluated_paths[i]),
            class_names[truth[i]],
            class_names[pred[i]],
            float(probs[i, pred[i]]),
            int(flags[i]),
            reason(int(flags[i])),
        )
        for i in np.flatnonzero((truth != pred) | (flags != 0)).tolist()
    ]
    return EvaluationResult(
        results_path=results_path,
        class_names=class_names,
        threshold=config.threshold,
        n_rows=len(table),
        evaluated=[p for p, keep in zip(ok_paths, labelled.tolist(), strict=True) if keep],
        failed=failed,
        unlabelled=unlabelled,
        unlabelled_folders=unlabelled_folders,
        folder_classes=labels.folder_classes,
        folder_counts=dict(Counter(labels.folders)),
        multiclass=multiclass_metrics(truth, pred, class_names),
        screening=screening_metrics(truth, probs, class_names, negative_class=config.negative_class, threshold=config.threshold),
        misclassified=[image for image in reviewed if image.truth != image.predicted],
        flagged=[image for image in reviewed if image.flags],
        not_a_smear=[str(p) for p in table.paths[junk]],
        label_source=source,
    )


def _file_assignment(truth: np.ndarray, paths: list[str], class_names: list[str], input_root: str | None) -> LabelAssignment:
    """A labels file's (n,) truth for ``paths`` as a LabelAssignment: each folder's class is the one class its
    labelled images share, "mixed" when they differ, None when none is labelled."""
    folders = [folder_of(p, input_root) for p in paths]
    seen: dict[str, set[str]] = {}
    for folder, t in zip(folders, truth.tolist(), strict=True):
        seen.setdefault(folder, set())
        if t >= 0:
            seen[folder].add(class_names[t])
    folder_classes = {f: (next(iter(c)) if len(c) == 1 else "mixed" if c else None) for f, c in seen.items()}
    return LabelAssignment(truth=np.asarray(truth, dtype=np.int64), folders=folders, folder_classes=folder_classes)


def evaluate_results(path: Path, config: EvalConfig) -> EvaluationResult:
    """Read the live committed rows of results file ``path`` and evaluate them (see ``evaluate_table``)."""
    return evaluate_table(read_results(Path(path)), config, str(path))
