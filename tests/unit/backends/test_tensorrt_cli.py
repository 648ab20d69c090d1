"""``allbatch engine build``: option checks, the exact call into the library, and the one-line error without TensorRT."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import pytest
from paths import REPO
from typer.testing import CliRunner

from allbatch.backends.tensorrt_backend import tensorrt_status
from allbatch.cli.app import _register, app
from allbatch.core.errors import BackendUnavailableError, UserInputError
from allbatch.model.manifest import DEFAULT_MODEL

TENSORRT_USABLE = tensorrt_status()[0]


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    _register()
    return CliRunner()


@pytest.mark.skipif(TENSORRT_USABLE, reason="TensorRT and a GPU are usable here: engine build would build")
def test_engine_build_without_tensorrt_is_one_line_and_exit_1(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "300", "ALLBATCH_CACHE": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "allbatch", "engine", "build", "--precision", "fp32"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: engine build needs TensorRT on a CUDA GPU: ")
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert list(tmp_path.iterdir()) == [], "nothing may be written when TensorRT is missing"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "int8"], "--precision must be fp16 or fp32"),
        (["--max-batch", "0"], "--max-batch must be at least 1"),
        (["--precision", "fp32", "--check-images", "."], "--check-images applies to --precision fp16 only"),
    ],
)
def test_bad_options_are_user_errors(runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["engine", "build", *args])
    assert isinstance(result.exception, UserInputError)
    assert message in str(result.exception)


@pytest.mark.skipif(TENSORRT_USABLE, reason="TensorRT and a GPU are usable here")
def test_without_tensorrt_the_library_error_is_raised(runner: CliRunner) -> None:
    result = runner.invoke(app, ["engine", "build"])
    assert isinstance(result.exception, BackendUnavailableError)
    assert "tensorrt not installed" in str(result.exception)


class RecordingBackend:
    """Stands in for TensorRTBackend (the TensorRT boundary): records how the command builds and enters it."""

    calls: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, artifact: Any, **options: Any) -> None:
        self.options = {"artifact": artifact, **options}

    def __enter__(self) -> RecordingBackend:
        RecordingBackend.calls.append(self.options)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {
            "engine_path": "/cache/0123.engine",
            "engine_digest": "0123",
            "tensorrt_version": "10.13.0.35",
            "device": "NVIDIA H100",
            "fp16_agreement": {"reason": "argmax agreement 1.0000 ..."},
        }


def test_engine_build_calls_the_backend(runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import allbatch.backends.tensorrt_backend as tensorrt_backend

    monkeypatch.setattr(tensorrt_backend, "tensorrt_status", lambda: (True, "tensorrt 10.13.0.35"))
    monkeypatch.setattr(tensorrt_backend, "TensorRTBackend", RecordingBackend)
    RecordingBackend.calls.clear()
    result = runner.invoke(
        app, ["engine", "build", "--max-batch", "64", "--cache-dir", str(tmp_path), "--check-images", str(tmp_path)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    (call,) = RecordingBackend.calls
    assert call["artifact"].onnx_path == DEFAULT_MODEL
    assert {k: v for k, v in call.items() if k != "artifact"} == {
        "precision": "fp16",
        "max_batch": 64,
        "cache_dir": tmp_path,
        "check_images": tmp_path,
    }
    assert "/cache/0123.engine" in result.output and "fp16     accepted: argmax agreement" in result.output
