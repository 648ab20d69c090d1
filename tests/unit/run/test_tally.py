"""The run's one tally keeps images that are not smears out of the class totals (issue 23, point 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from results_crash_support import COMPAT, rows_for

from allbatch.cli.run_cmd import summary_lines
from allbatch.qc.flags import QcFlag
from allbatch.results.writer import ResultsWriter
from allbatch.run.tally import Tally, add_up

GREY = int(QcFlag.BLURRED | QcFlag.COLOUR | QcFlag.OUTLIER)  # what a plain grey picture gets


def flagged_rows(indices: list[int], flags: list[int]):  # type: ignore[no-untyped-def]
    rows = rows_for(indices)
    rows.qc = {"flags": np.array(flags, dtype=np.uint16)}
    return rows


def test_rows_flagged_as_not_a_smear_are_counted_apart(tmp_path: Path) -> None:
    rows = flagged_rows([0, 1, 2, 3], [0, GREY, int(QcFlag.UNCERTAIN), int(QcFlag.SMALL)])
    tally = Tally(4)
    tally.add_rows(rows)
    summary = tally.summary(tmp_path / "r.h5", "onnxruntime", "cpu", "cpu")
    labels = rows.labels.tolist()
    expected = np.bincount([labels[0], labels[2]], minlength=4)  # ok and unflagged, and the doubtful ("uncertain") one
    assert list(summary.class_counts.values()) == expected.tolist()
    assert summary.not_a_smear == 2 and summary.ok == 4
    assert "; not a smear 2" in summary_lines(summary)[1]
    total = add_up([summary, summary], tmp_path / "r.h5", 1.0, "cpu")
    assert total.not_a_smear == 4 and sum(total.class_counts.values()) == 4


def test_skipped_rows_of_a_resume_read_their_flags_back(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    with ResultsWriter.open(out, mode="new", provenance={}, compat=COMPAT) as writer:
        writer.append(flagged_rows([0, 1, 2], [GREY, 0, int(QcFlag.COLOUR)]))
    tally = Tally(3)
    for row in range(3):
        tally.add_skipped(f"x{row}", 0, row)
    tally.finish(out)
    summary = tally.summary(out, "onnxruntime", "cpu", "cpu")
    assert summary.not_a_smear == 2 and sum(summary.class_counts.values()) == 1
