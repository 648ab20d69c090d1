"""Training: schedule, start from an exported artifact, EMA, full-state resume, the wall-clock deadline.

Runs the real training loop on the tiny model and the 8 demo images (2 per class): seconds, not a model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="training needs torch")
pytest.importorskip("cv2", reason="training augmentation needs OpenCV")

from training_support import DEMO, tiny_train_config  # noqa: E402

from allbatch.model.onnx_io import load_network  # noqa: E402 - after the importorskip
from factory.training.train import TrainConfig, epochs_within, init_history, initial_network, learning_rate, train  # noqa: E402


def test_learning_rate_warms_up_then_anneals_to_zero() -> None:
    assert learning_rate(0, 100, 1e-3, 0.1) == pytest.approx(4e-5)
    assert learning_rate(10, 100, 1e-3, 0.1) == pytest.approx(1e-3)
    assert learning_rate(55, 100, 1e-3, 0.1) == pytest.approx(5e-4)
    assert learning_rate(100, 100, 1e-3, 0.1) == pytest.approx(0.0)
    assert learning_rate(150, 100, 1e-3, 0.1) == pytest.approx(0.0)


def test_initial_network_from_an_exported_artifact(tiny_model: Path, tmp_path: Path) -> None:
    from allbatch.model.config import TINY

    manifest = json.loads(tiny_model.with_suffix(".json").read_text())
    reference = load_network(tiny_model, manifest["architecture"]).state_dict()
    loaded = initial_network(tiny_train_config(tmp_path, tiny_model), TINY).state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in reference.items())


def test_a_fine_tune_keeps_the_history_of_the_weights_it_started_from(tmp_path: Path) -> None:
    artifact = tmp_path / "model.onnx"
    earlier = [{"stage": 1, "epoch": 1, "size": 112}, {"stage": 2, "epoch": 1, "size": 224}]
    last = [{"stage": 2, "epoch": 1, "size": 224, "note": "fine-tune"}]
    artifact.with_suffix(".json").write_text(json.dumps({"training": {"init_history": earlier, "history": last}}))
    assert init_history(tiny_train_config(tmp_path, artifact)) == [*earlier, *last]
    checkpoint_run = tmp_path / "run"
    checkpoint_run.mkdir()
    (checkpoint_run / "history.json").write_text(json.dumps(earlier))
    from_checkpoint = TrainConfig(init_checkpoint=str(checkpoint_run / "best.pt"))
    assert init_history(from_checkpoint) == earlier
    assert init_history(TrainConfig()) == []


def test_train_ema_resume_and_deadline(tiny_model: Path, tmp_path: Path) -> None:
    shutil.copytree(DEMO, tmp_path / "data", ignore=shutil.ignore_patterns("*.md"))
    out = train(tiny_train_config(tmp_path, tiny_model))
    ckpt = tmp_path / "ckpt"
    history = json.loads((ckpt / "history.json").read_text())
    assert len(history) == 1 and {"accuracy", "macro_sensitivity", "nll", "ema", "steps"} <= history[0].keys()
    best = json.loads((ckpt / "best.json").read_text())
    assert best["weights"] in {"raw", "ema"} and best["epoch"] == 1
    state = torch.load(ckpt / "last.pt", weights_only=False)
    assert state["epoch"] == 1 and state["step"] == history[0]["steps"] > 0 and state["ema"] is not None

    # continue later with one more epoch: the step count and history carry on
    train(tiny_train_config(tmp_path, tiny_model, stage2_epochs=2, resume=str(ckpt / "last.pt")))
    resumed = torch.load(ckpt / "last.pt", weights_only=False)
    assert resumed["epoch"] == 2 and resumed["step"] == 2 * state["step"]
    assert [row["epoch"] for row in json.loads((ckpt / "history.json").read_text())] == [1, 2]
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["validation"]["selected_epoch"]["weights"] in {"raw", "ema"}
    assert len(manifest["training"]["history"]) == 2

    # a deadline in the past: no step runs, the state stays where it was
    train(tiny_train_config(tmp_path, tiny_model, stage2_epochs=3, resume=str(ckpt / "last.pt"), deadline_utc="2000-01-01T00:00:00"))
    assert torch.load(ckpt / "last.pt", weights_only=False)["epoch"] == 2


def test_epochs_within_a_budget() -> None:
    # 60 s budget, the first epoch took 10 s (12 s with the start): 4 more fit
    assert epochs_within(60.0, 12.0, 10.0, 1, 100) == 5
    # over budget already: the epochs done, and never past the cap
    assert epochs_within(60.0, 70.0, 10.0, 1, 100) == 1
    assert epochs_within(600.0, 12.0, 10.0, 1, 20) == 20


def test_a_stage2_budget_replans_the_schedule_to_end_at_zero(tiny_model: Path, tmp_path: Path) -> None:
    # a budget far below one epoch: the first two epochs run (the second measures an epoch's cost), then the
    # stage is re-planned to the epochs that fit in what is left: none more, of the 50 asked for
    shutil.copytree(DEMO, tmp_path / "data", ignore=shutil.ignore_patterns("*.md"))
    train(tiny_train_config(tmp_path, tiny_model, stage2_epochs=50, stage2_minutes=1e-6))
    history = json.loads((tmp_path / "ckpt" / "history.json").read_text())
    state = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=False)
    assert [row["epoch"] for row in history] == [1, 2]
    assert state["step"] == history[0]["steps"] + history[1]["steps"] > 0
