"""``scripts/gpu_train.sh --dry-run``: the GPU training call's own steps (train, validate, pack), run on this CPU
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

pytest.importorskip("torch", reason="training needs torch")
pytest.importorskip("cv2", reason="training augmentation needs OpenCV")

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "allbatch" / "demo"


def test_dry_run_trains_validates_and_packs_the_artifact(tmp_path: Path) -> None:
    out, data = tmp_path / "out", tmp_path / "data"
    shutil.copytree(DEMO, data, ignore=shutil.ignore_patterns("*.md"))
    variables = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "DATA": str(data)}
    variables["TRAIN_ARGS"] = "--val-fraction 0.4 --batch-size 2"  # 8 images: 4 train, 4 validation
    done = subprocess.run(
        ["bash", "scripts/gpu_train.sh", "--dry-run"], cwd=ROOT, env=variables, capture_output=True, text=True, timeout=600, check=False
    )
    logs = "".join(path.read_text() for path in out.glob("*.log"))
    assert done.returncode == 0, done.stdout + done.stderr + logs[-4000:]
    names = sorted(path.name for path in out.iterdir())
    assert len(names) <= 8  # what a device call brings back
    assert {"allbatch-densenet201.json", "history.json", "sha256.txt", "train.log", "validate.log", "model.onnx.part00"} <= set(names)
    # the parts reassemble to the exported model, whose manifest carries the validation figures written on the device
    model = b"".join(path.read_bytes() for path in sorted(out.glob("model.onnx.part*")))
    assert (out / "sha256.txt").read_text().split()[0] == hashlib.sha256(model).hexdigest()
    manifest = json.loads((out / "allbatch-densenet201.json").read_text())
    assert manifest["architecture"]["name"] == "tiny_shared_2ch"
    figures = manifest["validation"]["onnx_runtime"]
    assert figures["plain"]["n"] == len(manifest["training"]["val_files"]) > 0
    assert figures["fp16_weights_vs_fp32"]["argmax_agreement"] >= 0.0  # measured from best.pt, which stays on the device
    assert "train rc=0" in (out / "train.log").read_text() and "validate rc=0" in (out / "validate.log").read_text()
