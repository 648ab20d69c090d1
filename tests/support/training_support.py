"""A training configuration for the tiny model on the 8 demo images (2 per class), shared by the training tests."""

from __future__ import annotations

from pathlib import Path

from paths import REPO

from factory.training.train import TrainConfig

DEMO = REPO / "allbatch" / "demo"


def tiny_train_config(tmp_path: Path, tiny_model: Path, **changes: object) -> TrainConfig:
    """One stage-2 epoch of the tiny model from ``tiny_model``, data under tmp_path/data, checkpoints in tmp_path/ckpt."""
    base = TrainConfig(
        data_root=str(tmp_path / "data"),
        out=str(tmp_path / "out" / "model.onnx"),
        arch="tiny",
        stage1_epochs=0,
        stage2_epochs=1,
        batch_size=2,
        workers=0,
        val_fraction=0.4,
        checkpoint_dir=str(tmp_path / "ckpt"),
        init_onnx=str(tiny_model),
        ema_decay=0.5,
        blank_bottom_fraction=0.0,  # the tiny fixture model's preprocessing
    )
    return TrainConfig(**{**base.__dict__, **changes})
