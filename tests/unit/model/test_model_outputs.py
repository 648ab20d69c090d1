"""The model's three outputs (probs, logits, features), the temperature in the graph, and re-exporting
an artifact of an older manifest format with its weights unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from allbatch.backends.ort_backend import OnnxRuntimeBackend
from allbatch.core.errors import ModelError
from allbatch.model.manifest import load_model_artifact, manifest_path_for


def _batch(n: int) -> np.ndarray:
    return np.random.default_rng(1).normal(0.0, 1.0, size=(n, 2, 3, 224, 224)).astype(np.float32)


def test_old_manifest_format_is_refused_with_a_hint(tiny_model: Path, tmp_path: Path) -> None:
    old = tmp_path / "old.onnx"
    shutil.copy(tiny_model, old)
    data = json.loads(manifest_path_for(tiny_model).read_text())
    data.update(format_version=1, output_name="probs")
    del data["output_names"]
    manifest_path_for(old).write_text(json.dumps(data))
    with pytest.raises(ModelError, match="re-export"):
        load_model_artifact(old)


def test_reexport_keeps_the_weights_and_applies_the_temperature(tiny_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from allbatch.model.onnx_io import reexport_artifact

    target = tmp_path / "calibrated.onnx"
    manifest = reexport_artifact(tiny_model, target, temperature=2.5)
    assert manifest.temperature == 2.5
    batch = _batch(3)
    with OnnxRuntimeBackend(load_model_artifact(tiny_model), threads=1) as backend:
        before = backend.infer(batch)
    with OnnxRuntimeBackend(load_model_artifact(target), threads=1) as backend:
        after = backend.infer(batch)
    np.testing.assert_allclose(after.features, before.features, rtol=0, atol=1e-5)
    np.testing.assert_allclose(after.logits * 2.5, before.logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(after.probs.argmax(axis=1), before.probs.argmax(axis=1))
    assert after.probs.max() < before.probs.max()  # a temperature above 1 softens the probabilities


def test_torch_backend_returns_the_same_three_outputs_as_onnxruntime(tiny_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from allbatch.backends.torch_backend import TorchBackend
    from allbatch.model.onnx_io import reexport_artifact

    target = tmp_path / "t.onnx"
    reexport_artifact(tiny_model, target, temperature=1.7)
    artifact = load_model_artifact(target)
    batch = _batch(5)
    with OnnxRuntimeBackend(artifact, threads=1) as ort_backend:
        reference = ort_backend.infer(batch)
    with TorchBackend(artifact, device="cpu", precision="fp32", channels_last=False, max_batch=2) as torch_backend:
        actual = torch_backend.infer(batch)
    for name in ("probs", "logits", "features"):
        np.testing.assert_allclose(getattr(actual, name), getattr(reference, name), rtol=1e-4, atol=1e-4, err_msg=name)
