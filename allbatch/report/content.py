"""What the report shows, gathered from a results.h5 (plain data; html.py renders it).

Caps keep a report of 100,000 rows at a few MB: thumbnails are taken for at most ``MAX_*_THUMBS``
images per section, long tables stop at ``MAX_TABLE_ROWS`` with a count of the rest.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from allbatch.core.errors import AllbatchError
from allbatch.core.status import ImageStatus, status_name
from allbatch.evaluation import EvalConfig, EvaluationResult, evaluate_table
from allbatch.model.manifest import ModelManifest
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.segment import SegmentationParams
from allbatch.qc.flags import flag_words, not_a_smear_mask, reason
from allbatch.qc.stats import parse_qc
from allbatch.report.thumbs import Thumbnail, make_thumbnail
from allbatch.results.reader import ResultsTable, read_results
from allbatch.summarize.groups import GroupTable, VerdictRule, summarize_groups

log = logging.getLogger("allbatch.report")

MAX_FLAGGED_THUMBS = 48
MAX_LOW_CONFIDENCE_THUMBS = 24
MAX_MISCLASSIFIED_THUMBS = 48
MAX_TABLE_ROWS = 500
"""Rows listed per table (failed files, folders); the rest are counted."""
LOW_CONFIDENCE_BELOW = 0.9
"""The lowest-confidence section lists unflagged images whose predicted class has a probability below this
(the page states it); images under the model's ``uncertain`` threshold are flagged and shown with the flagged."""


@dataclass
class ImageCard:
    """One image shown with its thumbnail: where it is, what was predicted, why it is shown."""

    path: str
    predicted: str
    confidence: float
    reason: str
    flags: list[str]
    truth: str = ""
    thumbnail: Thumbnail | None = None


@dataclass
class ReportContent:
    """Everything on the page. Counts are over the live rows of the results file."""

    results_path: str
    provenance: list[tuple[str, str]]
    versions: dict[str, str]
    n_rows: int
    status_counts: dict[str, int]
    class_counts: dict[str, int]
    """Ok images per predicted class, the ones flagged as not a smear left out (``n_not_a_smear``)."""
    n_flagged: int
    flag_counts: dict[str, int]
    groups: GroupTable
    flagged: list[ImageCard]
    low_confidence: list[ImageCard]
    failed: list[tuple[str, str, str]]
    throughput: str
    qc_rules: list[dict[str, Any]]
    evaluation: EvaluationResult | None
    misclassified: list[ImageCard] = field(default_factory=list)
    misclassified_flagged: int = 0
    n_not_a_smear: int = 0
    low_confidence_below: float = LOW_CONFIDENCE_BELOW
    n_low_confidence: int = 0
    """Unflagged images below ``low_confidence_below`` (``low_confidence`` shows the lowest of them)."""
    run_history: list[dict[str, str]] = field(default_factory=list)
    """The runs into the file, oldest first: started (UTC), mode, rows committed before it."""

    @property
    def class_names(self) -> list[str]:
        return self.groups.class_names


def _throughput(attrs: dict[str, Any], n_rows_file: int) -> str:
    """Images of the latest run per second, from the file's timestamps (includes start-up and the final compaction)."""
    history = attrs.get("run_history") or []
    try:
        started = datetime.fromisoformat(str(attrs["run_started_utc"]))
        finished = datetime.fromisoformat(str(attrs["updated_utc"]))
    except (KeyError, ValueError):
        return "not recorded"
    before = int(history[-1].get("committed_before", 0)) if history else 0
    seconds = (finished - started).total_seconds()
    added = n_rows_file - before
    if seconds <= 0 or added <= 0:
        return f"{added} images in the latest run"
    return f"{added} images in {seconds:.0f} s in the latest run: {added / seconds:.1f} images/s (file timestamps, start-up included)"


def _manifest(attrs: dict[str, Any]) -> ModelManifest | None:
    value = attrs.get("model_manifest")
    if not isinstance(value, str | dict):
        return None
    try:
        return ModelManifest.from_json(value if isinstance(value, str) else json.dumps(value))
    except (ValueError, TypeError):
        return None


def gather(
    results: Path,
    *,
    group_by: str = "parent",
    rule: VerdictRule | None = None,
    thumbnails: bool = True,
    image_root: Path | None = None,
    labels_file: Path | None = None,
    low_confidence_below: float = LOW_CONFIDENCE_BELOW,
) -> ReportContent:
    """Read ``results`` and collect the report's content; thumbnails are read from ``image_root``
    (default: the run's input root) unless ``thumbnails`` is False. ``labels_file``: evaluate against it
    (``allbatch eval --labels``; its errors are raised) instead of the folder names (shown only when they name classes)."""
    table = read_results(Path(results))
    attrs = table.attrs
    names = table.class_names
    ok = table.status == ImageStatus.OK
    flags = table.flags.astype(np.int64)
    max_prob = table.qc["max_prob"]
    root = Path(image_root) if image_root is not None else Path(str(attrs.get("input_root", ".")))
    prep = Preprocessing.from_dict(attrs["preprocessing"]) if isinstance(attrs.get("preprocessing"), dict) else Preprocessing()
    seg = SegmentationParams.from_dict(attrs["segmentation"]) if isinstance(attrs.get("segmentation"), dict) else SegmentationParams()

    def card(i: int, truth: str = "") -> ImageCard:
        label = int(table.labels[i])
        path = str(table.paths[i])
        thumb = make_thumbnail(root / path, prep, seg) if thumbnails else None
        return ImageCard(path, names[label], float(table.probs[i, label]), reason(int(flags[i])), flag_words(int(flags[i])), truth, thumb)

    flagged_rows = np.flatnonzero(ok & (flags != 0))
    # most doubtful first: the lowest confidence among the flagged
    flagged_rows = flagged_rows[np.argsort(np.nan_to_num(max_prob[flagged_rows], nan=0.0), kind="stable")]
    unflagged_ok = np.flatnonzero(ok & (flags == 0))
    confidence = np.nan_to_num(table.probs[unflagged_ok].max(axis=1), nan=1.0) if len(unflagged_ok) else np.zeros(0)
    below = confidence < low_confidence_below  # a list of the 24 "lowest" of confident images would alarm for nothing
    unflagged_ok, confidence = unflagged_ok[below], confidence[below]
    lowest = unflagged_ok[np.argsort(confidence, kind="stable")[:MAX_LOW_CONFIDENCE_THUMBS]]
    junk = ok & not_a_smear_mask(flags)

    manifest = _manifest(attrs)
    qc_stats = parse_qc(manifest.qc, manifest.num_features, len(manifest.class_names)) if manifest is not None and manifest.qc else None
    evaluation = _evaluate(table, str(results), labels_file)
    misclassified: list[ImageCard] = []
    if evaluation is not None:
        row_of = {str(p): i for i, p in enumerate(table.paths)}
        for item in evaluation.misclassified[:MAX_MISCLASSIFIED_THUMBS]:
            misclassified.append(card(row_of[item.path], truth=item.truth))

    flag_counts: Counter[str] = Counter()
    for value in flags[ok & (flags != 0)].tolist():
        flag_counts.update(flag_words(int(value)))
    versions = attrs.get("library_versions") if isinstance(attrs.get("library_versions"), dict) else {}
    provenance = [
        ("results file", str(results)),
        ("input root", str(attrs.get("input_root", ""))),
        ("model", f"{manifest.name if manifest else '?'} (sha256 {str(attrs.get('model_sha256', ''))[:16]}...)"),
        ("backend", str(attrs.get("backend", ""))),
        ("device", str(attrs.get("device", ""))),
        ("decoder", str(attrs.get("decoder", ""))),
        ("allbatch", str(attrs.get("allbatch_version", ""))),
        ("command", " ".join(str(a) for a in attrs.get("argv", []) or [])),
        ("run started (UTC)", str(attrs.get("run_started_utc", ""))),
        ("file updated (UTC)", str(attrs.get("updated_utc", ""))),
        ("runs into this file", str(attrs.get("runs", ""))),
    ]
    return ReportContent(
        results_path=str(results),
        provenance=provenance,
        versions={str(k): str(v) for k, v in (versions or {}).items()},
        n_rows=len(table),
        status_counts=dict(sorted(Counter(status_name(int(s)) for s in table.status).items())),
        class_counts={name: int((table.labels[ok & ~junk] == k).sum()) for k, name in enumerate(names)},
        n_flagged=int((ok & (flags != 0)).sum()),
        flag_counts=dict(sorted(flag_counts.items(), key=lambda kv: -kv[1])),
        groups=summarize_groups(table, group_by, rule),
        flagged=[card(int(i)) for i in flagged_rows[:MAX_FLAGGED_THUMBS]],
        low_confidence=[card(int(i)) for i in lowest],
        failed=[(str(table.paths[i]), status_name(int(table.status[i])), str(table.errors[i])) for i in np.flatnonzero(~ok)],
        throughput=_throughput(attrs, int(table.rows.max()) + 1 if len(table) else 0),
        qc_rules=qc_stats.describe() if qc_stats is not None else [],
        evaluation=evaluation,
        misclassified=misclassified,
        misclassified_flagged=sum(1 for m in evaluation.misclassified if m.flags) if evaluation is not None else 0,
        n_not_a_smear=int(junk.sum()),
        low_confidence_below=low_confidence_below,
        n_low_confidence=len(unflagged_ok),
        run_history=[
            {"started": str(run.get("started_utc", "")), "mode": str(run.get("mode", "")), "before": str(run.get("committed_before", ""))}
            for run in attrs.get("run_history") or []
            if isinstance(run, dict)
        ],
    )


def _evaluate(table: ResultsTable, where: str, labels_file: Path | None = None) -> EvaluationResult | None:
    """Metrics against ``labels_file`` (its errors raised), else against folder labels when the folders name
    classes; None otherwise (an unlabelled archive)."""
    if labels_file is not None:
        return evaluate_table(table, EvalConfig(labels_file=Path(labels_file)), where)
    if not bool((table.status == ImageStatus.OK).any()):
        return None
    try:
        return evaluate_table(table, EvalConfig(), where)
    except AllbatchError as exc:
        log.debug("no evaluation in the report: %s", exc)
        return None


def provenance_json(content: ReportContent) -> str:
    """The provenance table as JSON (embedded in the page for machines)."""
    return json.dumps(dict(content.provenance), sort_keys=True)
