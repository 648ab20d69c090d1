"""ONNX Runtime backend on the tiny model: output contract, input validation, provenance (the lifetime guard and
the outputs on real images, for every backend: tests/contracts/test_backend_contract.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from allbatch.backends.ort_backend import OnnxRuntimeBackend
from allbatch.backends.validate import InvalidBatchError
from allbatch.core.errors import AllbatchError, ModelError, UserInputError
from allbatch.model.manifest import ModelArtifact, load_model_artifact


@pytest.fixture(scope="module")
def artifact(tiny_model: Path) -> ModelArtifact:
    return load_model_artifact(tiny_model)


def random_batch(n: int, size: int = 224, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 2, 3, size, size)).astype(np.float32)


def test_infer_returns_float32_probabilities_per_row(artifact: ModelArtifact) -> None:
    batch = random_batch(3)
    with OnnxRuntimeBackend(artifact, threads=1) as backend:
        probs = backend.infer(batch).probs
        one_by_one = np.concatenate([backend.infer(batch[i : i + 1]).probs for i in range(3)])
    assert probs.shape == (3, 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(probs > 0)
    # rows are independent: batching does not change a row's result
    np.testing.assert_allclose(probs, one_by_one, rtol=0, atol=1e-6)
    assert np.abs(probs[0] - probs[1]).max() > 1e-3, "different inputs should give different probabilities"


def test_non_contiguous_input_gives_the_same_result(artifact: ModelArtifact) -> None:
    batch = random_batch(4)
    with OnnxRuntimeBackend(artifact, threads=1) as backend:
        np.testing.assert_array_equal(backend.infer(batch[::2]).probs, backend.infer(np.ascontiguousarray(batch[::2])).probs)


def test_empty_batch_gives_empty_result(artifact: ModelArtifact) -> None:
    with OnnxRuntimeBackend(artifact, threads=1) as backend:
        output = backend.infer(np.zeros((0, 2, 3, 224, 224), dtype=np.float32))
    assert output.probs.shape == (0, 4) and output.probs.dtype == np.float32
    assert output.logits.shape == (0, 4) and output.features.shape == (0, artifact.manifest.num_features)


def test_outputs_are_consistent(artifact: ModelArtifact) -> None:
    """probs = softmax(logits), the head applied to the features gives the logits (times the temperature)."""
    import onnx
    from onnx import numpy_helper

    with OnnxRuntimeBackend(artifact, threads=1) as backend:
        output = backend.infer(random_batch(3))
    assert output.features.shape == (3, artifact.manifest.num_features) and output.features.dtype == np.float32
    shifted = np.exp(output.logits - output.logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(output.probs, shifted / shifted.sum(axis=1, keepdims=True), rtol=0, atol=1e-6)
    weights = {init.name: numpy_helper.to_array(init).astype(np.float32) for init in onnx.load(str(artifact.onnx_path)).graph.initializer}
    head = output.features @ weights["net.head.1.weight.fp16"].T + weights["net.head.1.bias.fp16"]
    np.testing.assert_allclose(output.logits * artifact.manifest.temperature, head, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (np.zeros((2, 3, 224, 224), dtype=np.float32), r"shape \(2, 3, 224, 224\) does not match the model input \(N, 2, 3, 224, 224\)"),
        (np.zeros((1, 2, 3, 128, 128), dtype=np.float32), r"shape \(1, 2, 3, 128, 128\)"),
        (np.zeros((1, 1, 3, 224, 224), dtype=np.float32), r"shape \(1, 1, 3, 224, 224\)"),
        (np.zeros((1, 2, 3, 224, 224), dtype=np.float64), "dtype float64 is not float32"),
        (np.zeros((1, 2, 3, 224, 224), dtype=np.float16), "dtype float16 is not float32"),
        ([[0.0]], "takes a NumPy array; got builtins.list"),
    ],
)
def test_invalid_batches_raise_a_clear_error(artifact: ModelArtifact, batch: object, message: str) -> None:
    with OnnxRuntimeBackend(artifact, threads=1) as backend, pytest.raises(InvalidBatchError, match=message) as info:
        backend.infer(batch)
    assert isinstance(info.value, AllbatchError) and isinstance(info.value, ValueError)


def test_describe_reports_version_providers_threads(artifact: ModelArtifact) -> None:
    import onnxruntime

    with OnnxRuntimeBackend(artifact, threads=1) as backend:
        details = backend.describe()
    assert details["onnxruntime_version"] == onnxruntime.__version__
    assert details["providers"] == ["CPUExecutionProvider"]
    assert details["threads"] == 1
    assert backend.name == "onnxruntime" and backend.device.startswith("cpu")


def test_bad_thread_count_is_a_user_error(artifact: ModelArtifact) -> None:
    with pytest.raises(UserInputError, match="threads must be at least 1"):
        OnnxRuntimeBackend(artifact, threads=0)


def test_graph_that_does_not_match_the_manifest_is_a_model_error(artifact: ModelArtifact) -> None:
    from dataclasses import replace

    renamed = replace(artifact, manifest=replace(artifact.manifest, input_name="pixels"))
    with pytest.raises(ModelError, match="differ from the manifest"), OnnxRuntimeBackend(renamed):
        pass


def test_unloadable_onnx_is_a_model_error(artifact: ModelArtifact, tmp_path: Path) -> None:
    from dataclasses import replace

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match="onnxruntime cannot load"), OnnxRuntimeBackend(replace(artifact, onnx_path=broken)):
        pass
