"""Where a run or a benchmark ran: CPU, GPUs and driver, library versions, git commit, command line, machine load."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from allbatch import __version__
from allbatch.environment.cpu_features import cpu_info

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH_LIBRARIES = ("opencv-python-headless", "opencv-python", "psutil", "matplotlib", "typer")
BUSY_CPU_PERCENT = 20.0
"""Other processes above this share of one core while sampling are listed as load."""


def git_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    """Commit, branch and whether tracked files differ from it; empty strings outside a git checkout."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    return {
        "commit": commit,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None,
    }


def machine_load(sample_s: float = 1.0) -> dict[str, Any]:
    """Load averages and the other processes busy right now (psutil, sampled over ``sample_s``)."""
    load: dict[str, Any] = {"loadavg_1_5_15": [round(v, 2) for v in os.getloadavg()]}
    try:
        import psutil
    except ImportError:
        # Same type as when sampled (a list), so that readers need no special case; the reason is beside it.
        load["busy_processes"] = []
        load["busy_processes_not_sampled"] = "psutil not installed (pip install psutil)"
        return load
    me = psutil.Process()
    ours = {me.pid, *(child.pid for child in me.children(recursive=True))}
    procs = [p for p in psutil.process_iter(["pid", "name", "cmdline"]) if p.pid not in ours]
    for proc in procs:
        try:
            proc.cpu_percent(None)
        except psutil.Error:
            continue
    psutil.cpu_percent(None)
    time.sleep(sample_s)
    busy = []
    for proc in procs:
        try:
            percent = proc.cpu_percent(None)
        except psutil.Error:
            continue
        if percent >= BUSY_CPU_PERCENT:
            command = " ".join(proc.info.get("cmdline") or [proc.info.get("name") or "?"])
            busy.append({"pid": proc.pid, "cpu_percent": round(percent, 1), "command": command[:160]})
    load["system_cpu_percent"] = round(psutil.cpu_percent(None), 1)
    load["busy_processes"] = sorted(busy, key=lambda p: -float(p["cpu_percent"]))
    return load


RUN_LIBRARIES = ("numpy", "h5py", "pillow", "onnx", "onnxruntime", "openvino", "torch", "cupy-cuda13x", "nvidia-dali-cuda130", "tensorrt")
"""Distributions whose versions every results file records (read from package metadata, not imported)."""


def library_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Python, allbatch and the installed versions of ``RUN_LIBRARIES`` plus ``extra`` (absent ones left out)."""
    versions = {"python": platform.python_version(), "allbatch": __version__}
    for dist in (*RUN_LIBRARIES, *extra):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def collect_environment(argv: list[str]) -> dict[str, Any]:
    """Everything needed to read a result later: hardware, software, code version and the command."""
    from allbatch.environment.gpu_probe import probe_gpus

    gpus, gpu_note = probe_gpus()
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_info(),
        "gpus": [gpu.to_dict() for gpu in gpus],
        "gpu_probe": gpu_note,
        "libraries": library_versions(BENCH_LIBRARIES),
        "thread_env": {name: os.environ[name] for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if name in os.environ},
        "git": git_state(),
        "command": argv,
        "executable": sys.executable,
    }
