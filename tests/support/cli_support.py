"""Running ``allbatch`` as a subprocess, as a user does (the tests' one way to call the CLI end to end)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def allbatch(*args: str, check_code: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "allbatch", *args], capture_output=True, text=True, env=env, timeout=300)
    if check_code is not None:
        assert result.returncode == check_code, result.stderr[-3000:]
    return result


def cpu_run_args(root: Path, out: Path, model: Path, *extra: str) -> list[str]:
    """`allbatch run` arguments for ROOT -> OUT with MODEL on ONNX Runtime and the CPU decoder."""
    return ["run", str(root), "--out", str(out), "--model", str(model), "--backend", "onnxruntime", "--decoder", "cpu", *extra]


def allbatch_with_file_size_limit(limit: int, *args: str) -> subprocess.CompletedProcess[str]:
    """``allbatch ARGS`` in a subprocess whose files may not grow past ``limit`` bytes (RLIMIT_FSIZE, what
    ``ulimit -f`` sets): a write beyond it fails with EFBIG (Python ignores SIGXFSZ), as on a full disk."""
    import resource

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "allbatch", *args], capture_output=True, text=True, env=env, timeout=300, preexec_fn=limit_file_size
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one ``error:`` line of a run that failed cleanly: exit 1, no traceback, no ignored exception, no crash."""
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]
