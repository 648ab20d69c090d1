"""``benchmarks/gpu_verify.sh --dry-run``: the GPU verification's own steps, run on this CPU, so that the script
itself is not what fails on a lent GPU machine (the device run swaps only the decoder and backend names)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from paths import REPO

pytestmark = pytest.mark.slow  # each runs the whole script: about a minute on the 2-core machine

ROOT = REPO
DEMO = ROOT / "allbatch" / "demo"
STEPS = ["env", "tests", "images", "fields", "run-gpu", "run-cpu", "parity", "speed", "bench"]
FILES = ["bench.json", "env.txt", "gpu-tests.xml", "parity.json", "speed.json", "steps.log", "summary.json"]


def dry_run(out: Path, model: Path, **env: str) -> subprocess.CompletedProcess[str]:
    variables = {**os.environ, "OUT": str(out), "MODEL": str(model), "PYTHON": sys.executable, "SRC": str(DEMO)}
    variables.update(COUNT="8", BATCH="4", BENCH_COUNT="8", REPEAT_TO="8", **env)
    variables.pop("ALLBATCH_DATASET_ROOT", None)
    return subprocess.run(
        ["bash", "benchmarks/gpu_verify.sh", "--dry-run"], cwd=ROOT, env=variables, capture_output=True, text=True, timeout=900, check=False
    )


def test_dry_run_passes_every_step_and_returns_at_most_8_files(tiny_model: Path, tmp_path: Path) -> None:
    out, wheels = tmp_path / "out", tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "probe_pkg-0-py3-none-any.whl", "w") as wheel:  # what WHEELS holds on the device
        wheel.writestr("probe_pkg/__init__.py", "")
    done = dry_run(out, tiny_model, WHEELS=str(wheels))
    log = (out / "steps.log").read_text(encoding="utf-8") if (out / "steps.log").is_file() else ""
    assert done.returncode == 0, done.stdout + done.stderr + log[-4000:]
    assert sorted(path.name for path in out.iterdir()) == FILES  # at most 8 files come back from the device
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["mode"] == "dry-run" and summary["all_ok"] is True
    assert [step["step"] for step in summary["steps"]] == STEPS
    assert all(step["status"] == "ok" for step in summary["steps"])
    assert summary["tests"]["tests"] > 0 and summary["tests"]["failures"] == 0 and summary["tests"]["errors"] == 0
    parity = summary["parity"]
    assert parity["matched_by_path"] == parity["both_ok"] == 8
    assert parity["label_agreement"] == 1.0 and parity["max_abs_prob_diff"] == 0.0  # DALI CPU == Pillow on 224-px JPEGs
    assert parity["gpu"]["decoder"] == "dali-cpu" and parity["cpu"]["decoder"] == "cpu"
    assert summary["run_gpu_side"]["ok"] == 8 and summary["run_cpu_side"]["ok"] == 8
    assert summary["bench"]["summary"]["end_to_end_images_per_s"] > 0
    speed = summary["speed"]["steps"]  # issue 22's old-vs-new ratios, measured in one process
    assert set(speed["ratios"]) >= {"new_vs_old", "new_vs_prefetch_depth_1", "new_vs_no_fancy_upsampling", "end_to_end_vs_infer_only"}
    assert speed["startup"]["pipeline_cache"]["builds"] >= 1 and speed["variants"]["old"]["ok"] == 8
    assert speed["parity"]["new"]["label_agreement"] == 1.0 and speed["parity"]["new"]["max_abs_prob_diff"] == 0.0
    assert len(speed["damaged"]["planted"]) == 3 and speed["damaged"]["pipelines_built_meanwhile"] == 0
    assert all(planted["status"] != 0 for planted in speed["damaged"]["planted"])
    assert speed["large_fields"]["ok"] == 2 and "prepare" in speed["large_fields"]["serial_stages"]
    env = (out / "env.txt").read_text(encoding="utf-8")
    assert "nvidia-smi: not available" in env and "unpacked wheels: probe_pkg" in env


def test_a_failing_step_does_not_stop_the_others(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = dry_run(out, tiny_model, SRC=str(tmp_path / "missing"))
    assert done.returncode == 1
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    status = {step["step"]: step["status"] for step in summary["steps"]}
    assert list(status) == STEPS  # every step ran, in order, and was recorded
    assert status["env"] == status["tests"] == "ok"
    assert status["images"] == status["run-gpu"] == status["parity"] == status["bench"] == status["speed"] == "failed"
    assert summary["all_ok"] is False and summary["parity"] is None
