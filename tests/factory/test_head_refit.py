"""Last-layer re-training (training.head_refit): the convex head fit, block-wise cross-validation, and a
refit of the tiny model on the 8 demo images that yields a loadable artifact with the new head."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the head refit needs torch")
pytest.importorskip("cv2", reason="training augmentation needs OpenCV")

from training_support import DEMO, tiny_train_config  # noqa: E402

from allbatch.model.manifest import load_model_artifact  # noqa: E402 - after the importorskip
from allbatch.model.onnx_io import load_network  # noqa: E402
from factory.training.head_refit import (  # noqa: E402
    HeadRefitConfig,
    block_folds,
    block_ids,
    fit_linear_head,
    head_logits,
    refit_head,
)
from factory.training.split import LabelledImage  # noqa: E402
from factory.training.train import train  # noqa: E402


def _blobs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Four Gaussian classes in 12 dimensions, features on very different scales and offsets."""
    labels = rng.integers(0, 4, n)
    centres = rng.normal(0, 3, (4, 12))
    x = centres[labels] + rng.normal(0, 1, (n, 12))
    scale, offset = np.geomspace(1e-3, 1e3, 12), rng.normal(0, 100, 12)
    return (x * scale + offset).astype(np.float32), labels.astype(np.int64)


def test_the_fitted_head_acts_on_raw_features_and_separates_held_out_data() -> None:
    rng = np.random.default_rng(0)
    x, y = _blobs(rng, 800)
    weight, bias = fit_linear_head(x[:600], y[:600], 4, weight_decay=1e-3)
    assert weight.shape == (4, 12) and bias.shape == (4,) and weight.dtype == np.float32
    assert (head_logits(x[600:], weight, bias).argmax(1) == y[600:]).mean() > 0.95
    # the standardisation is folded into the weights: scaling a feature changes the weights, not the decisions
    w2, b2 = fit_linear_head(x[:600] * 7.0 + 3.0, y[:600], 4, weight_decay=1e-3)
    np.testing.assert_array_equal(head_logits(x[600:] * 7.0 + 3.0, w2, b2).argmax(1), head_logits(x[600:], weight, bias).argmax(1))


def test_blocks_follow_the_split_and_stay_whole_in_one_fold() -> None:
    images = [LabelledImage(Path(f"{label}-{number}.jpg"), label, number) for label in (0, 1) for number in range(1, 101)]
    ids = block_ids(images, 25)
    assert len(np.unique(ids)) == 8  # 2 classes x 4 blocks of 25
    assert ids[0] == ids[24] != ids[25] and ids[0] != ids[100]
    groups = np.tile(ids, 3)  # three views of each image
    folds = block_folds(groups, 4, seed=1)
    for group in np.unique(groups):
        assert len(np.unique(folds[groups == group])) == 1
    assert sorted(np.unique(folds)) == [0, 1, 2, 3]


def test_refit_writes_a_loadable_artifact_with_the_new_head(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(DEMO, data, ignore=shutil.ignore_patterns("*.md"))
    trained = train(tiny_train_config(tmp_path, tiny_model))
    out = tmp_path / "refit" / "model.onnx"
    config = HeadRefitConfig(passes=1, folds=2, weight_decays=(1e-2, 1e-1), max_iter=50)
    cache = tmp_path / "views.npz"
    record = refit_head(trained, out, data, backend_name="onnxruntime", precision="fp32", config=config, features_cache=cache)

    source = json.loads(trained.with_suffix(".json").read_text())
    manifest = json.loads(out.with_suffix(".json").read_text())
    n_train = 8 - len(source["training"]["val_files"])
    assert record["images"] == n_train and record["views"] == 2 * n_train
    assert record["chosen_weight_decay"] in (1e-2, 1e-1) and set(record["cross_validation"]) == {"0.01", "0.1"}
    assert manifest["training"]["head_refit"] == json.loads(json.dumps(record))
    assert manifest["training"]["val_files"] == source["training"]["val_files"]  # the records are kept
    assert manifest["temperature"] == 1.0  # the logit scale changed: calibrate again
    before, after = load_network(trained, source["architecture"]), load_network(out, manifest["architecture"])
    assert not torch.equal(before.head[1].weight, after.head[1].weight)
    for name, value in before.backbone.state_dict().items():
        assert torch.equal(value, after.backbone.state_dict()[name]), name  # the backbone is untouched
    assert load_model_artifact(out).sha256 == manifest["onnx_sha256"]

    # a second refit with the same model, images and views reads the cached features and fits the same head
    state = tmp_path / "refit.pt"
    again = refit_head(
        trained,
        tmp_path / "again" / "model.onnx",
        data,
        "onnxruntime",
        "fp32",
        config,
        features_cache=cache,
        checkpoint=tmp_path / "ckpt" / "best.pt",
        state_out=state,
    )
    assert "cached" in again["feature_backend"] and again["cross_validation"] == record["cross_validation"]
    saved = torch.load(state)  # the fp32 reference: the checkpoint's backbone with the refitted head
    best = torch.load(tmp_path / "ckpt" / "best.pt")
    assert all(torch.equal(saved[key], best[key]) for key in best if not key.startswith("head."))
    assert torch.allclose(saved["head.1.weight"], after.head[1].weight, rtol=2e-3, atol=1e-3)  # the ONNX keeps fp16
    other = HeadRefitConfig(passes=2, folds=2, weight_decays=(1e-2,), max_iter=10)  # other views: not the cache's
    assert (
        refit_head(trained, tmp_path / "other" / "model.onnx", data, "onnxruntime", "fp32", other, features_cache=cache)["views"]
        == 3 * n_train
    )
