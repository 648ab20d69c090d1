"""The TensorRT backend: what can be checked without TensorRT here, and the real thing (marked tensorrt + gpu)
on the tiny model against ONNX Runtime where TensorRT and a CUDA GPU exist."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from allbatch.backends import select
from allbatch.backends.fp16_check import DEFAULT_CHECK_IMAGES, FP16_MAX_ABS_PROB_DIFF, check_inputs_from_folder
from allbatch.backends.ort_backend import OnnxRuntimeBackend
from allbatch.backends.tensorrt_backend import TensorRTBackend, tensorrt_status
from allbatch.backends.trt_engine import engine_paths, require_tensorrt
from allbatch.backends.validate import InvalidBatchError
from allbatch.core.errors import BackendUnavailableError, UserInputError
from allbatch.model.manifest import ModelArtifact, load_model_artifact

TENSORRT_USABLE, TENSORRT_REASON = tensorrt_status()
needs_tensorrt_gpu = pytest.mark.skipif(not TENSORRT_USABLE, reason=f"TensorRT backend not usable here: {TENSORRT_REASON}")


@pytest.fixture(scope="module")
def artifact() -> ModelArtifact:
    return load_model_artifact()


# -- without TensorRT --------------------------------------------------------------------------------


def test_options_are_checked_before_anything_runs(artifact: ModelArtifact) -> None:
    with pytest.raises(UserInputError, match="precision"):
        TensorRTBackend(artifact, precision="int8")
    with pytest.raises(UserInputError, match="max_batch"):
        TensorRTBackend(artifact, max_batch=0)
    with pytest.raises(UserInputError, match="device_id"):
        TensorRTBackend(artifact, device_id=-1)


def test_describe_before_enter(artifact: ModelArtifact, tmp_path: Path) -> None:
    details = TensorRTBackend(artifact, precision="fp32", max_batch=8, cache_dir=tmp_path).describe()
    assert details["backend"] == "tensorrt" and details["precision"] == "fp32" and details["max_batch"] == 8
    assert details["cache_dir"] == str(tmp_path) and "engine_key" not in details


@pytest.mark.skipif(TENSORRT_USABLE, reason="TensorRT and a GPU are usable here")
def test_unavailable_here_with_the_reason(artifact: ModelArtifact, tmp_path: Path) -> None:
    usable, reason = tensorrt_status()
    assert usable is False and reason
    assert select.tensorrt_status() == (False, reason)
    backend = TensorRTBackend(artifact, cache_dir=tmp_path)
    with pytest.raises(BackendUnavailableError, match=r"^tensorrt backend: "), backend:
        pass
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="outside its `with` block"):
        backend.infer(np.zeros((1, 2, 3, 224, 224), np.float32))


def test_type_stubs_are_not_taken_for_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """tensorrt-stubs installed as a plain ``tensorrt/`` folder imports as an empty namespace package."""
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    with pytest.raises(BackendUnavailableError, match="not TensorRT"):
        require_tensorrt()
    assert tensorrt_status()[0] is False


# -- with TensorRT and a CUDA GPU ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_artifact(tiny_model: Path) -> ModelArtifact:
    return load_model_artifact(tiny_model)


@pytest.fixture(scope="module")
def demo_inputs(tiny_artifact: ModelArtifact) -> np.ndarray:
    return check_inputs_from_folder(DEFAULT_CHECK_IMAGES, tiny_artifact)


@pytest.fixture(scope="module")
def ort_probs(tiny_artifact: ModelArtifact, demo_inputs: np.ndarray) -> np.ndarray:
    with OnnxRuntimeBackend(tiny_artifact) as backend:
        return backend.infer(demo_inputs).probs


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_tensorrt_gpu
def test_fp32_engine_matches_onnxruntime(
    tiny_artifact: ModelArtifact, demo_inputs: np.ndarray, ort_probs: np.ndarray, tmp_path: Path
) -> None:
    import cupy

    with TensorRTBackend(tiny_artifact, precision="fp32", max_batch=4, cache_dir=tmp_path) as backend:
        from_host = backend.infer(demo_inputs).probs  # 8 rows: two chunks of the 1..4 profile
        on_device = cupy.asarray(demo_inputs)
        from_device = backend.infer(on_device).probs
        with pytest.raises(InvalidBatchError):
            backend.infer(on_device[:, 0])
        details = backend.describe()
    np.testing.assert_allclose(from_host, ort_probs, atol=1e-4)
    np.testing.assert_allclose(from_device, from_host, atol=1e-6)
    assert details["engine_key"]["precision"] == "fp32" and details["engine_key"]["max_batch"] == 4
    assert Path(details["engine_path"]).is_file() and "fp16_agreement" not in details
    assert details["input_dtype"] == "float32" and details["engine_device_memory_bytes"] >= 0


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_tensorrt_gpu
def test_fp16_engine_is_checked_cached_and_reused(
    tiny_artifact: ModelArtifact, demo_inputs: np.ndarray, ort_probs: np.ndarray, tmp_path: Path
) -> None:
    with TensorRTBackend(tiny_artifact, precision="fp16", max_batch=8, cache_dir=tmp_path) as backend:
        probs = backend.infer(demo_inputs).probs
        key = backend.key
        figures = backend.describe()["fp16_agreement"]
    assert key is not None
    assert figures["accepted"] is True and figures["n"] == 8 and figures["reference"] == "onnxruntime fp32 (CPU)"
    np.testing.assert_allclose(probs, ort_probs, atol=FP16_MAX_ABS_PROB_DIFF)
    engine, sidecar = engine_paths(tmp_path, key)
    meta = json.loads(sidecar.read_text())
    assert meta["fp16_agreement"]["argmax_agreement"] == figures["argmax_agreement"]

    built = engine.stat().st_mtime_ns
    with TensorRTBackend(tiny_artifact, precision="fp16", max_batch=8, cache_dir=tmp_path) as again:
        np.testing.assert_allclose(again.infer(demo_inputs).probs, probs, atol=1e-6)
    assert engine.stat().st_mtime_ns == built, "the cached engine must be reused"

    engine.write_bytes(b"garbage")  # corrupt: refused, rebuilt, and the check runs again
    with TensorRTBackend(tiny_artifact, precision="fp16", max_batch=8, cache_dir=tmp_path) as rebuilt:
        np.testing.assert_allclose(rebuilt.infer(demo_inputs).probs, ort_probs, atol=FP16_MAX_ABS_PROB_DIFF)
    assert engine.read_bytes() != b"garbage"
