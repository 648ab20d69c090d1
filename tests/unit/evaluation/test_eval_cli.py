"""``allbatch eval`` on a small results.h5 written by the real ResultsWriter: JSON numbers, PNG, errors."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from allbatch.cli import app as cli_app
from allbatch.core.errors import ResultsFileError, UserInputError
from allbatch.core.status import ImageStatus
from allbatch.qc.flags import QcFlag
from allbatch.results.rows import ResultRows
from allbatch.results.writer import ResultsWriter

runner = CliRunner()
OK, BAD = ImageStatus.OK, ImageStatus.DECODE_ERROR
NAN4 = [float("nan")] * 4

# (path, P(Benign, Early, Pre, Pro), status). Truth comes from the folder; the prediction is the argmax.
FIRST_RUN = [
    ("Benign/b1.jpg", [0.90, 0.05, 0.03, 0.02], OK),  # Benign -> Benign, P(ALL) 0.10
    ("Benign/b2.jpg", [0.30, 0.60, 0.05, 0.05], OK),  # Benign -> Early,  P(ALL) 0.70 (screening FP)
    ("Early/e1.jpg", [0.10, 0.80, 0.05, 0.05], OK),  # Early -> Early,   P(ALL) 0.90
    ("Early/e2.jpg", [0.55, 0.40, 0.03, 0.02], OK),  # Early -> Benign,  P(ALL) 0.45 (screening FN)
    ("[Malignant] Pre-B/p1.jpg", [0.05, 0.05, 0.80, 0.10], OK),  # Pre -> Pre, 0.95
    ("[Malignant] Pre-B/p2.jpg", [0.10, 0.10, 0.20, 0.60], OK),  # Pre -> Pro, 0.90
    ("[Malignant] Pro-B/r1.jpg", [0.02, 0.03, 0.05, 0.90], OK),  # Pro -> Pro, 0.98
    ("Pro/changed.jpg", [0.90, 0.05, 0.03, 0.02], OK),  # superseded below: must not count
    ("Unsorted/u1.jpg", [0.10, 0.10, 0.10, 0.70], OK),  # no class for this folder
    ("Benign/bad.jpg", NAN4, BAD),  # failed in the run
]
FLAGGED = {"Early/e1.jpg", "[Malignant] Pre-B/p2.jpg"}  # doubtful (outlier), still smears: one right, one wrong prediction
SECOND_RUN = [("Pro/changed.jpg", [0.10, 0.10, 0.10, 0.70], OK)]  # Pro -> Pro, 0.90


def _rows(spec: list[tuple[str, list[float], ImageStatus]]) -> ResultRows:
    probs = np.array([p for _, p, _ in spec], dtype=np.float32)
    failed = np.isnan(probs).any(axis=1)
    return ResultRows(
        paths=[path for path, _, _ in spec],
        sha256=[hashlib.sha256(path.encode()).hexdigest() for path, _, _ in spec],
        status=np.array([s for _, _, s in spec], dtype=np.int8),
        errors=["cannot identify image file" if s != OK else "" for _, _, s in spec],
        probs=probs,
        labels=np.where(failed, -1, np.nan_to_num(probs).argmax(axis=1)).astype(np.int8),
        mask_fraction=np.where(failed, np.nan, 0.1).astype(np.float32),
        qc={"flags": np.array([int(QcFlag.OUTLIER) if path in FLAGGED else 0 for path, _, _ in spec], dtype=np.uint16)},
    )


@pytest.fixture
def results_file(tmp_path: Path) -> Path:
    path = tmp_path / "slides.h5"
    provenance = {"input_root": str(tmp_path / "slides")}
    with ResultsWriter.open(path, mode="new", provenance=provenance, compat={}, expected_rows=len(FIRST_RUN)) as writer:
        writer.append(_rows(FIRST_RUN))
        writer.supersede([7])
        writer.append(_rows(SECOND_RUN))
    return path


def invoke(*args: str) -> object:
    cli_app._register()
    return runner.invoke(cli_app.app, ["eval", *args])


def test_json_has_the_hand_computed_numbers_and_a_png_is_written(results_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "metrics.json"
    result = invoke(str(results_file), "--json", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["counts"] == {"rows": 10, "evaluated": 8, "failed": 1, "unlabelled": 1, "misclassified": 3, "flagged": 2, "not_a_smear": 0}
    wrong = [(m["path"], m["truth"], m["predicted"], m["reason"]) for m in data["misclassified"]]
    assert wrong == [
        ("Benign/b2.jpg", "Benign", "Early", "ok"),
        ("Early/e2.jpg", "Early", "Benign", "ok"),
        ("[Malignant] Pre-B/p2.jpg", "Pre", "Pro", "outlier"),
    ]
    assert data["misclassified"][0]["confidence"] == pytest.approx(0.60)
    assert [(m["path"], m["flags"]) for m in data["flagged"]] == [("Early/e1.jpg", 32), ("[Malignant] Pre-B/p2.jpg", 32)]
    assert data["confusion"]["matrix"] == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 2]]
    assert data["accuracy"] == pytest.approx(5 / 8)
    benign, pro = data["per_class"]["Benign"], data["per_class"]["Pro"]
    assert (benign["precision"], benign["sensitivity"], benign["specificity"]) == pytest.approx((0.5, 0.5, 5 / 6))
    assert (pro["support"], pro["precision"], pro["sensitivity"], pro["f1"]) == pytest.approx((2, 2 / 3, 1.0, 0.8))
    sc = data["screening"]
    assert (sc["tp"], sc["fn"], sc["fp"], sc["tn"], sc["threshold"]) == (5, 1, 1, 1, 0.5)
    assert (sc["sensitivity"], sc["specificity"], sc["accuracy"]) == pytest.approx((5 / 6, 0.5, 0.75))
    assert sc["auc"] == pytest.approx(11 / 12)  # only e2 (0.45) ranks below a benign image (b2, 0.70)
    assert data["failed"] == [{"path": "Benign/bad.jpg", "status": "decode_error", "error": "cannot identify image file"}]
    assert data["unlabelled"] == {"folders": {"Unsorted": 1}, "paths": ["Unsorted/u1.jpg"]}
    assert data["folders"]["[Malignant] Pre-B"] == {"class": "Pre", "images": 2}
    assert "macro average" in result.stdout and "Unsorted" in result.stdout and "decode_error" in result.stdout
    png = tmp_path / "slides.confusion.png"
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 300


def test_json_to_stdout_with_a_class_map_and_no_png(results_file: Path, tmp_path: Path) -> None:
    result = invoke(str(results_file), "--json", "-", "--no-png", "--class-map", "unsorted=Pro", "-q")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # stdout holds the JSON only
    assert data["counts"]["evaluated"] == 9 and data["counts"]["unlabelled"] == 0
    assert data["per_class"]["Pro"]["support"] == 3 and data["per_class"]["Pro"]["tp"] == 3
    assert not list(tmp_path.glob("*.png"))


def test_png_path_and_json_on_stdout_keep_the_tables_on_stderr(results_file: Path, tmp_path: Path) -> None:
    png = tmp_path / "figs" / "cm.png"
    png.parent.mkdir()
    result = invoke(str(results_file), "--png", str(png), "--json", "-")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"]["evaluated"] == 8  # the tables went to stderr
    assert "macro average" in result.stderr and f"confusion matrix -> {png}" in result.stderr
    assert png.is_file() and not (tmp_path / "slides.confusion.png").exists()


def test_threshold_changes_only_the_screening_counts(results_file: Path) -> None:
    result = invoke(str(results_file), "--threshold", "0.92", "--json", "-", "--no-png", "-q")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    sc = data["screening"]
    assert (sc["tp"], sc["fn"], sc["fp"], sc["tn"], sc["threshold"]) == (2, 4, 0, 2, 0.92)  # p1 0.95 and r1 0.98
    assert sc["auc"] == pytest.approx(11 / 12)
    assert data["accuracy"] == pytest.approx(5 / 8)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (["--no-labels-from-folders"], UserInputError, "needs truth labels: give --labels"),
        (["--threshold", "1.5"], UserInputError, "within [0, 1]"),
        (["--class-map", "Unsorted=Leukaemia"], UserInputError, "unknown class 'Leukaemia'"),
        (["--png", "x.png", "--no-png"], UserInputError, "exclude each other"),
    ],
)
def test_bad_options_are_user_errors(results_file: Path, args: list[str], error: type[Exception], message: str) -> None:
    result = invoke(str(results_file), *args)
    assert isinstance(result.exception, error)
    assert message in str(result.exception)


def test_missing_results_file(tmp_path: Path) -> None:
    result = invoke(str(tmp_path / "nope.h5"))
    assert isinstance(result.exception, ResultsFileError)


def test_no_labelled_images_exits_1_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "unlabelled.h5"
    spec = [("Unsorted/u1.jpg", [0.1, 0.1, 0.1, 0.7], OK), ("Benign/bad.jpg", NAN4, BAD)]
    with ResultsWriter.open(path, mode="new", provenance={}, compat={}) as writer:
        writer.append(_rows(spec))
    cli_app._register()
    monkeypatch.setattr(sys, "argv", ["allbatch", "eval", str(path), "--no-png"])
    with pytest.raises(SystemExit) as info:
        cli_app.main()
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "could be labelled" in err and "'Unsorted'" in err and "--class-map" in err and "Traceback" not in err
    assert not (tmp_path / "unlabelled.confusion.png").exists()


def test_without_matplotlib_the_default_png_is_skipped_with_a_warning(results_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import raise ImportError
    result = invoke(str(results_file))
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout
    assert "no confusion-matrix PNG: matplotlib is not installed" in result.stderr and "pip install matplotlib" in result.stderr
    assert not results_file.with_name("slides.confusion.png").exists()


def test_without_matplotlib_an_explicit_png_is_refused_before_any_work(
    results_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    result = invoke(str(results_file), "--png", str(tmp_path / "cm.png"))
    assert isinstance(result.exception, UserInputError)
    assert "--png needs matplotlib" in str(result.exception) and "pip install matplotlib" in str(result.exception)
    assert "accuracy" not in result.stdout
