"""``export`` never replaces a CSV unasked; ``eval`` and ``export`` warn about a run that did not finish."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from allbatch.cli import app as cli_app
from allbatch.core.errors import UserInputError
from allbatch.results.rows import ResultRows
from allbatch.results.writer import ResultsWriter

runner = CliRunner()
PATHS = ["Benign/a.jpg", "Early/b.jpg", "Pre/c.jpg", "Pro/d.jpg"]


def _write(path: Path, *, finished: bool) -> Path:
    probs = np.eye(4, dtype=np.float32) * 0.9 + 0.025
    rows = ResultRows(
        paths=PATHS,
        sha256=[hashlib.sha256(p.encode()).hexdigest() for p in PATHS],
        status=np.zeros(4, dtype=np.int8),
        errors=[""] * 4,
        probs=probs,
        labels=probs.argmax(axis=1).astype(np.int8),
        mask_fraction=np.full(4, 0.1, dtype=np.float32),
    )
    writer = ResultsWriter.open(path, mode="new", provenance={}, compat={}, expected_rows=8)
    writer.append(rows)
    writer.close(compact=finished)  # compact=False: what an interrupted or killed run leaves
    return path


def invoke(*args: str) -> object:
    cli_app._register()
    return runner.invoke(cli_app.app, list(args))


def test_export_refuses_to_replace_a_csv_without_force(tmp_path: Path) -> None:
    results = _write(tmp_path / "r.h5", finished=True)
    csv = tmp_path / "r.csv"
    csv.write_text("keep me\n")
    result = invoke("export", str(results), "--csv", str(csv))
    assert isinstance(result.exception, UserInputError) and "--force" in str(result.exception)  # type: ignore[attr-defined]
    assert csv.read_text() == "keep me\n"
    for flag in ("--force", "--overwrite"):
        result = invoke("export", str(results), "--csv", str(csv), flag)
        assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
        assert csv.read_text().splitlines()[0].startswith("path,") and len(csv.read_text().splitlines()) == 5


@pytest.mark.parametrize("command", ["export", "eval"])
def test_an_unfinished_run_is_warned_about_and_a_finished_one_is_not(tmp_path: Path, command: str) -> None:
    for finished in (False, True):
        results = _write(tmp_path / f"{command}-{finished}.h5", finished=finished)
        extra = ["--csv", str(tmp_path / f"{command}-{finished}.csv")] if command == "export" else ["--no-png"]
        result = invoke(command, str(results), *extra)
        assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
        warned = "did not finish" in result.stderr and "--resume" in result.stderr  # type: ignore[attr-defined]
        assert warned is (not finished)


def test_eval_shows_file_names_escaped(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    names = ["Benign/a.jpg", "Early/\x1b[2Jevil\u202e.jpg"]
    rows = ResultRows(
        paths=names,
        sha256=[hashlib.sha256(p.encode()).hexdigest() for p in names],
        status=np.array([0, 1], dtype=np.int8),
        errors=["", "cannot identify image file"],
        probs=np.array([[0.7, 0.1, 0.1, 0.1], [np.nan] * 4], dtype=np.float32),
        labels=np.array([0, -1], dtype=np.int8),
        mask_fraction=np.array([0.1, np.nan], dtype=np.float32),
    )
    with ResultsWriter.open(path, mode="new", provenance={}, compat={}) as writer:
        writer.append(rows)
    result = invoke("eval", str(path), "--no-png")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "Early/\\x1b[2Jevil\\u202e.jpg" in result.stdout and "\x1b" not in result.stdout  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", ["report", "eval"])
def test_report_and_eval_json_refuse_to_replace_a_file_without_the_export_flag(tmp_path: Path, command: str) -> None:
    """The same rule and flag as `export`: an existing output is kept unless --force (or --overwrite) is given."""
    results = _write(tmp_path / "r.h5", finished=True)
    target = tmp_path / ("r.html" if command == "report" else "metrics.json")
    target.write_text("keep me\n")
    args = ["report", str(results), "-o", str(target)] if command == "report" else ["eval", str(results), "--no-png", "--json", str(target)]
    result = invoke(*args)
    assert isinstance(result.exception, UserInputError) and "--force" in str(result.exception)  # type: ignore[attr-defined]
    assert target.read_text() == "keep me\n"
    for flag in ("--force", "--overwrite"):
        result = invoke(*args, flag)
        assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
        assert target.read_text() != "keep me\n"
    assert ("<html" in target.read_text().lower()) if command == "report" else ('"accuracy"' in target.read_text())


def test_report_and_eval_refuse_a_folder_as_output(tmp_path: Path) -> None:
    results = _write(tmp_path / "r.h5", finished=True)
    for args in (["report", str(results), "-o", str(tmp_path)], ["eval", str(results), "--no-png", "--json", str(tmp_path)]):
        result = invoke(*args)
        assert isinstance(result.exception, UserInputError) and "is a folder" in str(result.exception)  # type: ignore[attr-defined]
