"""Patient archives scored (issue 23, point 3): ``eval --labels labels.csv`` and ``report --labels``, mixed folders;
images that are not smears left out of the metrics by default (point 2)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from allbatch.cli import app as cli_app
from allbatch.core.errors import UserInputError
from allbatch.core.status import ImageStatus
from allbatch.evaluation import EvalConfig, evaluate_results
from allbatch.qc.flags import QcFlag
from allbatch.report.html import write_report
from allbatch.results.rows import ResultRows
from allbatch.results.writer import ResultsWriter

runner = CliRunner()
GREY = int(QcFlag.BLURRED | QcFlag.COLOUR | QcFlag.OUTLIER)
# An archive laid out by patient: (path, predicted class index, flags). P02 is a mixed folder.
ARCHIVE = [
    ("P01/a.jpg", 0, 0),
    ("P01/b.jpg", 0, 0),
    ("P01/c.jpg", 1, 0),  # Benign called Early
    ("P02/d.jpg", 1, 0),
    ("P02/e.jpg", 0, 0),
    ("P02/f.jpg", 2, int(QcFlag.UNCERTAIN)),  # doubtful, still a smear: evaluated
    ("P02/grey.jpg", 3, GREY),  # a grey picture "Pro 0.998": not a smear, left out
    ("P03/sub/same.jpg", 3, 0),
    ("P04/same.jpg", 3, 0),
]
LABELS = """path,class
P01/a.jpg,Benign
b.jpg,hematogones
c.jpg,Benign
P02/d.jpg,Early Pre-B
e.jpg,Early
f.jpg,[Malignant] Pre-B
grey.jpg,Pro
P03/sub/same.jpg,Pro-B
P04/same.jpg,pro
"""


def _rows() -> ResultRows:
    n = len(ARCHIVE)
    probs = np.full((n, 4), 0.01, dtype=np.float32)
    for i, (_, label, _) in enumerate(ARCHIVE):
        probs[i, label] = 0.97
    return ResultRows(
        paths=[a[0] for a in ARCHIVE],
        sha256=[hashlib.sha256(a[0].encode()).hexdigest() for a in ARCHIVE],
        status=np.full(n, int(ImageStatus.OK), dtype=np.int8),
        errors=[""] * n,
        probs=probs,
        labels=np.array([a[1] for a in ARCHIVE], dtype=np.int8),
        mask_fraction=np.full(n, 0.05, dtype=np.float32),
        qc={"flags": np.array([a[2] for a in ARCHIVE], dtype=np.uint16)},
    )


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "r.h5"
    with ResultsWriter.open(out, mode="new", provenance={"input_root": str(tmp_path / "archive")}, compat={}) as writer:
        writer.append(_rows())
    labels = tmp_path / "labels.csv"
    labels.write_text(LABELS, encoding="utf-8")
    return out, labels


def test_a_labels_file_scores_a_patient_archive_with_mixed_folders(archive: tuple[Path, Path]) -> None:
    results, labels = archive
    result = evaluate_results(results, EvalConfig(labels_file=labels))
    assert result.label_source == f"labels file {labels}"
    assert result.not_a_smear == ["P02/grey.jpg"] and result.multiclass.n == 8
    # truth B B B | E E Pre | Pro Pro; predicted B B E | E B Pre | Pro Pro
    assert result.multiclass.confusion.tolist() == [[2, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 2]]
    assert [(m.path, m.truth, m.predicted) for m in result.misclassified] == [
        ("P01/c.jpg", "Benign", "Early"),
        ("P02/e.jpg", "Early", "Benign"),
    ]
    assert result.folder_classes["P02"] == "mixed" and result.folder_classes["P01"] == "Benign"
    included = evaluate_results(results, EvalConfig(labels_file=labels, include_not_a_smear=True))
    assert included.multiclass.n == 9 and not included.not_a_smear


def test_folder_labels_leave_images_that_are_not_smears_out_and_say_how_many(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    rows = _rows()
    rows.paths = [f"{'Benign' if i < 5 else 'Pro'}/{i}-{p.split('/')[-1]}" for i, p in enumerate(rows.paths)]
    with ResultsWriter.open(out, mode="new", provenance={}, compat={}) as writer:
        writer.append(rows)
    cli_app._register()
    plain = runner.invoke(cli_app.app, ["eval", str(out), "--json", "-", "--no-png"])
    assert plain.exit_code == 0, plain.output
    data = json.loads(plain.stdout)
    assert data["counts"]["not_a_smear"] == 1 and data["counts"]["evaluated"] == 8 and data["not_a_smear"] == ["Pro/6-grey.jpg"]
    assert "1 image flagged as not a smear" in " ".join(plain.stderr.split())  # the tables go to stderr beside --json -
    included = runner.invoke(cli_app.app, ["eval", str(out), "--json", "-", "--no-png", "--include-not-a-smear", "-q"])
    assert json.loads(included.stdout)["counts"]["evaluated"] == 9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.jpg,Leukaemia\n", "line 1: unknown class 'Leukaemia'; classes are Benign, Early, Pre, Pro"),
        ("path,class\nP01/a.jpg,Benign\nz.jpg,Pro\n", "line 3: 'z.jpg' matches no image in the results"),
        ("same.jpg,Pro\n", "line 1: 'same.jpg' is ambiguous, it matches 2 images ('P03/sub/same.jpg', 'P04/same.jpg')"),
        ("a.jpg,Benign\nP01/a.jpg,Pro\n", "line 2: 'P01/a.jpg' is labelled Pro here and Benign on line 1"),
        ("a.jpg;Benign;extra\n", "line 1: expected two cells"),
        ("path,class\n", "no label rows"),
    ],
)
def test_bad_labels_files_are_refused_in_one_line(archive: tuple[Path, Path], text: str, message: str) -> None:
    results, labels = archive
    labels.write_text(text, encoding="utf-8")
    cli_app._register()
    result = runner.invoke(cli_app.app, ["eval", str(results), "--labels", str(labels), "--no-png"])
    assert isinstance(result.exception, UserInputError)
    assert message in str(result.exception) and "\n" not in str(result.exception)


def test_semicolons_a_byte_order_mark_and_sub_paths_are_accepted(archive: tuple[Path, Path]) -> None:
    results, labels = archive
    labels.write_bytes("\ufefffile;class\r\nsub/same.jpg;Pro\r\nP04/same.jpg;Pro\r\n".encode())
    result = evaluate_results(results, EvalConfig(labels_file=labels))
    assert result.multiclass.n == 2 and len(result.unlabelled) == 6  # the rest have no row: counted, not guessed


def test_report_with_labels_shows_the_metrics_the_confusion_and_the_misclassified(archive: tuple[Path, Path], tmp_path: Path) -> None:
    results, labels = archive
    out = tmp_path / "report.html"
    content, _ = write_report(results, out, labels_file=labels)
    page = out.read_text(encoding="utf-8")
    assert content.evaluation is not None and content.evaluation.multiclass.n == 8
    assert f"Against labels file {labels}" in page and 'data-value="accuracy">0.7500<' in page
    assert 'data-value="confusion-0-1"' in page and "1 not a smear left out" in page
    assert [card.path for card in content.misclassified] == ["P01/c.jpg", "P02/e.jpg"]
    cli_app._register()
    labels.write_text("nope.jpg,Benign\n", encoding="utf-8")
    refused = runner.invoke(cli_app.app, ["report", str(results), "-o", str(tmp_path / "r2.html"), "--labels", str(labels)])
    assert isinstance(refused.exception, UserInputError) and "matches no image" in str(refused.exception)
