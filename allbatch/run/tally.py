"""The one tally of a run: counts, predicted classes and failure examples, and the summary made from it.

Every executor counts through ``Tally``: the in-process engine per committed chunk, Ray's driver per
committed block, the local executor by adding up its workers' summaries (``add_up``). So the figures a run
prints (and ``--json``) mean the same whatever ran it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from allbatch import CLASS_NAMES
from allbatch.core.status import FAILED_STATUSES, status_name
from allbatch.qc.flags import not_a_smear_mask
from allbatch.results.rows import ResultRows

if TYPE_CHECKING:
    from allbatch.summarize.groups import GroupTable

MAX_FAILED_EXAMPLES = 20
"""Failed files named in a summary (path, status, error); the rest are counted."""
SKIPPED_REASON = "committed by an earlier run"


@dataclass
class RunSummary:
    """What a run did. ``ok``/``failed`` count every discovered file, including those skipped because an
    earlier run committed them (so a resumed run still reports failures); ``failed_this_run`` only the failed
    files this run read (what exit code 3 means: a resume with nothing new exits 0); ``processed`` (and the
    rate) counts only the images run through the model now, ``skipped`` the committed ones not redone.
    ``failed_examples`` lists at most ``MAX_FAILED_EXAMPLES`` (path, status, error). ``interrupted``: a stop
    was requested and honoured (committed rows kept, the file left in its working layout for ``--resume``).
    ``class_counts``: ok images of this run's files (processed or skipped) per predicted class, leaving out the
    ``not_a_smear`` ones (flagged as not a usable smear, ``qc.flags.NOT_A_SMEAR``: their label stays in the file).
    ``startup_seconds``: from the start of the run until the model and the decoder were ready (not in ``seconds``)."""

    output: str
    discovered: int
    processed: int
    skipped: int
    ok: int
    failed: int
    seconds: float
    backend: str
    decoder: str
    device: str
    failed_examples: list[tuple[str, str, str]] = field(default_factory=list)
    interrupted: bool = False
    class_counts: dict[str, int] = field(default_factory=dict)
    startup_seconds: float = 0.0
    failed_this_run: int = 0
    not_a_smear: int = 0
    groups: GroupTable | None = field(default=None, repr=False, compare=False)
    """The folder table written as ``/groups`` at the end of a finished run (not part of ``to_dict``)."""

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        values = {key: value for key, value in self.__dict__.items() if key != "groups"}
        return {**values, "images_per_second": round(self.images_per_second, 2)}


class Tally:
    """Counts of one run (or one part of it), filled as rows are committed or skipped.

    ``add_rows``: rows run through the model now; ``add_skipped``: a file an earlier run committed (its
    committed row number, so that its predicted class is read back once at the end with ``finish``)."""

    def __init__(self, discovered: int) -> None:
        self.discovered = discovered
        self.processed = 0
        self.skipped = 0
        self.ok = 0
        self.failed = 0
        self.failed_this_run = 0
        self.failed_examples: list[tuple[str, str, str]] = []
        self.labels = np.zeros(len(CLASS_NAMES), dtype=np.int64)
        self.not_a_smear = 0
        self.skipped_rows: list[int] = []

    def _failure(self, relpath: str, status: int, error: str) -> None:
        self.failed += 1
        if len(self.failed_examples) < MAX_FAILED_EXAMPLES:
            self.failed_examples.append((relpath, status_name(status), error))

    def add_rows(self, rows: ResultRows) -> None:
        """Count freshly classified rows: ok/failed by status, predicted classes by label (not-a-smear rows apart)."""
        self.processed += len(rows)
        for relpath, status, error in zip(rows.paths, rows.status.tolist(), rows.errors, strict=True):
            if status in FAILED_STATUSES:
                self._failure(relpath, status, error)
                self.failed_this_run += 1
            else:
                self.ok += 1
        self._count_labels(rows.labels, rows.qc.get("flags"))

    def add_skipped(self, relpath: str, status: int, row: int) -> None:
        """Count a file an earlier run committed (not redone): its status, and its row for ``finish``."""
        self.skipped += 1
        self.skipped_rows.append(row)
        if status in FAILED_STATUSES:
            self._failure(relpath, status, SKIPPED_REASON)
        else:
            self.ok += 1

    def _count_labels(self, labels: Any, flags: Any = None) -> None:
        """Add (n,) predicted labels (-1: failed) to the class counts; those whose (n,) /qc/flags (None: no QC)
        say "not a smear" go to ``not_a_smear`` instead."""
        labels = np.asarray(labels, dtype=np.int64)
        valid = (labels >= 0) & (labels < len(CLASS_NAMES))
        if flags is not None:
            junk = valid & not_a_smear_mask(flags)
            self.not_a_smear += int(junk.sum())
            valid &= ~junk
        self.labels += np.bincount(labels[valid], minlength=len(CLASS_NAMES))

    def finish(self, output: Path) -> None:
        """Add the predicted classes of the skipped files, read from ``output`` (after the writer closed)."""
        if self.skipped_rows:
            from allbatch.results.reader import read_labels_and_flags

            self._count_labels(*read_labels_and_flags(output, self.skipped_rows))
            self.skipped_rows = []

    def summary(self, output: Path, backend: str, decoder: str, device: str, seconds: float = 0.0) -> RunSummary:
        return RunSummary(
            output=str(output),
            discovered=self.discovered,
            processed=self.processed,
            skipped=self.skipped,
            ok=self.ok,
            failed=self.failed,
            seconds=seconds,
            backend=backend,
            decoder=decoder,
            device=device,
            failed_examples=list(self.failed_examples),
            class_counts={name: int(self.labels[i]) for i, name in enumerate(CLASS_NAMES)},
            failed_this_run=self.failed_this_run,
            not_a_smear=self.not_a_smear,
        )


def add_up(summaries: list[RunSummary], output: Path, seconds: float, device: str) -> RunSummary:
    """One summary from the summaries of a run's parts (the local executor's workers), in part order."""
    first = summaries[0]
    examples = [example for summary in summaries for example in summary.failed_examples][:MAX_FAILED_EXAMPLES]
    return RunSummary(
        output=str(output),
        discovered=sum(s.discovered for s in summaries),
        processed=sum(s.processed for s in summaries),
        skipped=sum(s.skipped for s in summaries),
        ok=sum(s.ok for s in summaries),
        failed=sum(s.failed for s in summaries),
        seconds=seconds,
        backend=first.backend,
        decoder=first.decoder,
        device=device,
        failed_examples=examples,
        interrupted=any(s.interrupted for s in summaries),
        class_counts={name: sum(s.class_counts.get(name, 0) for s in summaries) for name in CLASS_NAMES},
        startup_seconds=max(s.startup_seconds for s in summaries),
        failed_this_run=sum(s.failed_this_run for s in summaries),
        not_a_smear=sum(s.not_a_smear for s in summaries),
    )
