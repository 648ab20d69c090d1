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
