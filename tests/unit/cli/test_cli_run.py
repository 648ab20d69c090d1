"""The CLI edge: options become the exact RunConfig, errors become one line and exit 1."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from allbatch import CLASS_NAMES
from allbatch.cli import app as cli_app
from allbatch.cli import run_cmd
from allbatch.core.errors import UserInputError
from allbatch.run.config import RunConfig
from allbatch.run.tally import RunSummary
from allbatch.summarize.groups import GroupTable, VerdictRule

runner = CliRunner()


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[RunConfig]:
    calls: list[RunConfig] = []

    def fake_run(config: RunConfig, progress: Any = None, stop: Any = None) -> RunSummary:
        calls.append(config)
        failed = [("[bold]evil\x1b[31m.jpg", "decode_error", "bad\rdata")]
        summary = RunSummary(
            str(config.output),
            3,
            3,
            0,
            2,
            1,
            1.0,
            "onnxruntime",
            "cpu",
            "cpu",
            failed,
            class_counts={"Benign": 1, "Pro": 1},
            failed_this_run=1,
        )
        summary.groups = GroupTable(str(config.group_by), VerdictRule(), list(CLASS_NAMES))  # the run writes the folder table
        return summary

    monkeypatch.setattr(run_cmd, "run", fake_run)
    cli_app._register()
    return calls


def test_options_map_to_run_config(tmp_path: Path, captured: list[RunConfig]) -> None:
    result = runner.invoke(
        cli_app.app,
        [
            "run",
            str(tmp_path),
            "--out",
            str(tmp_path / "r.h5"),
            "--backend",
            "onnxruntime",
            "--decoder",
            "cpu",
            "--batch-size",
            "8",
            "--resume",
            "--symlinks",
            "skip",
            "--quiet",
        ],
    )
    assert result.exit_code == 3, result.output  # one image failed
    (config,) = captured
    assert config.source == tmp_path and config.output == tmp_path / "r.h5"
    assert (config.backend, config.decoder, config.batch_size, config.mode, config.symlinks) == ("onnxruntime", "cpu", 8, "resume", "skip")


def test_demo_uses_the_shipped_images(tmp_path: Path, captured: list[RunConfig]) -> None:
    result = runner.invoke(cli_app.app, ["run", "--demo", "--out", str(tmp_path / "d.h5"), "--json", "--quiet"])
    assert result.exit_code == 3
    assert captured[0].source == run_cmd.DEMO_DIR
    assert len(list(run_cmd.DEMO_DIR.glob("*/*.jpg"))) == 8
    assert '"failed": 1' in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--resume", "--overwrite"], "exclude each other"),
        (["--backend", "cuda"], "unknown --backend"),
        (["--decoder", "nvjpeg"], "unknown --decoder"),
        (["--symlinks", "maybe"], "unknown --symlinks"),
    ],
)
def test_bad_options_raise_user_errors(tmp_path: Path, captured: list[RunConfig], args: list[str], message: str) -> None:
    result = runner.invoke(cli_app.app, ["run", str(tmp_path), "--out", str(tmp_path / "r.h5"), *args])
    assert isinstance(result.exception, UserInputError)
    assert message in str(result.exception)
    assert not captured


def test_main_turns_errors_into_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["allbatch", "run", str(tmp_path / "missing"), "--out", str(tmp_path / "r.h5")], ["allbatch", "run", "--no-such-option"]):
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as info:
            cli_app.main()
        assert info.value.code == 1
        err = capsys.readouterr().err
        assert "error:" in err and "Traceback" not in err
        assert len(err.strip().splitlines()) <= 2


def test_summary_counts_classes_and_escapes_file_names(tmp_path: Path, captured: list[RunConfig]) -> None:
    result = runner.invoke(cli_app.app, ["run", str(tmp_path), "--out", str(tmp_path / "r.h5")])
    assert result.exit_code == 3
    assert "[bold]evil\\x1b[31m.jpg: bad\\x0ddata" in result.stderr and "\x1b" not in result.stderr
    assert "3 of 3 images done: ok 2, failed 1; predicted: Benign 1, Pro 1" in result.stderr


def test_exit_code_follows_the_failures_of_this_run_only() -> None:
    """3 when files this run read failed; 0 when the failures are all from an earlier run (a --resume with nothing new)."""
    earlier_only = RunSummary("r.h5", 3, 0, 3, 2, 1, 0.0, "onnxruntime", "cpu", "cpu", failed_this_run=0)
    this_run = RunSummary("r.h5", 3, 1, 2, 2, 1, 0.0, "onnxruntime", "cpu", "cpu", failed_this_run=1)
    assert run_cmd.exit_code_for(earlier_only) == 0
    assert run_cmd.exit_code_for(this_run) == 3
    assert "failed 1 (0 in this run)" in run_cmd.summary_lines(earlier_only)[1]
    assert "in this run)" not in run_cmd.summary_lines(this_run)[1]


def test_run_help_documents_the_exit_codes() -> None:
    cli_app._register()
    result = runner.invoke(cli_app.app, ["run", "--help"])
    assert result.exit_code == 0
    assert "Exit codes:" in result.output and "--resume with nothing new" in result.output
    for code in ("0", "1", "3", "130", "143"):
        assert f"\n    {code} " in result.output
