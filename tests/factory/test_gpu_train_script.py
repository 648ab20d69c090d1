"""``factory/scripts/gpu_train.sh --dry-run``: the GPU training call's own steps (train, validate, pack), run on this CPU
with the tiny network on the demo images, so that the script is not what fails on a lent GPU machine."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO

pytest.importorskip("torch", reason="training needs torch")
pytest.importorskip("cv2", reason="training augmentation needs OpenCV")

ROOT = REPO
DEMO = ROOT / "allbatch" / "demo"


def test_dry_run_trains_validates_and_packs_the_artifact(tmp_path: Path) -> None:
    out, data = tmp_path / "out", tmp_path / "data"
    shutil.copytree(DEMO, data, ignore=shutil.ignore_patterns("*.md"))
    variables = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "DATA": str(data)}
    variables["TRAIN_ARGS"] = "--val-fraction 0.4 --batch-size 2"  # 8 images: 4 train, 4 validation
    done = subprocess.run(
        ["bash", "factory/scripts/gpu_train.sh", "--dry-run"],
        cwd=ROOT,
        env=variables,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    logs = "".join(path.read_text() for path in out.glob("*.log"))
    assert done.returncode == 0, done.stdout + done.stderr + logs[-4000:]
    names = sorted(path.name for path in out.iterdir())
    assert len(names) <= 8  # what a device call brings back
    assert {"allbatch-densenet201.json", "fp32_logits.npz", "history.json", "sha256.txt", "train.log", "model.onnx.part00"} <= set(names)
    # the parts reassemble to the exported model
    model = tmp_path / "model" / "allbatch-densenet201.onnx"
    model.parent.mkdir()
    model.write_bytes(b"".join(path.read_bytes() for path in sorted(out.glob("model.onnx.part*"))))
    assert (out / "sha256.txt").read_text().split()[0] == hashlib.sha256(model.read_bytes()).hexdigest()
    shutil.copy(out / "allbatch-densenet201.json", model.parent)
    assert "train rc=0" in (out / "train.log").read_text() and "reference rc=0" in (out / "train.log").read_text()
    # here: the fp16-weights agreement from the fp32 logits that came back instead of the checkpoint
    command = [sys.executable, "-m", "factory.scripts.validate_model", "--model", str(model), "--data", str(data), "--write"]
    validated = subprocess.run(
        [*command, "--fp32-logits", str(out / "fp32_logits.npz")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    figures = json.loads((model.parent / "allbatch-densenet201.json").read_text())["validation"]["onnx_runtime"]
    agreement = figures["fp16_weights_vs_fp32"]
    assert agreement["n"] == figures["plain"]["n"] == 4 and "fp32_logits.npz" in agreement["reference"]
    assert agreement["argmax_agreement"] == 1.0 and agreement["max_abs_prob_diff"] < 0.01  # fp16 storage of a tiny net
