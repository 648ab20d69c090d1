"""The OpenVINO backend on the tiny model: fp32 parity with ONNX Runtime, the shared base class's guard,
validation and chunking, and the bf16 agreement gate with its stored figures."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino", reason="openvino not installed (pip install 'allbatch[openvino]')")

from allbatch.backends.fp16_check import DEFAULT_CHECK_IMAGES, check_inputs_from_folder
from allbatch.backends.openvino_backend import OpenVinoBackend
from allbatch.backends.ort_backend import OnnxRuntimeBackend
from allbatch.backends.validate import InvalidBatchError
from allbatch.core.errors import BackendUnavailableError, UserInputError
from allbatch.environment.cpu_features import cpu_features
from allbatch.model.manifest import ModelArtifact, load_model_artifact

NATIVE_BF16 = cpu_features().native_bf16


@pytest.fixture(scope="module")
def artifact(tiny_model: Path) -> ModelArtifact:
    return load_model_artifact(tiny_model)


@pytest.fixture(scope="module")
def real_batch(artifact: ModelArtifact) -> np.ndarray:
    """The 8 shipped demo images, prepared as the manifest says: (8, 2, 3, 224, 224) float32."""
    return check_inputs_from_folder(DEFAULT_CHECK_IMAGES, artifact)


@pytest.fixture(scope="module")
def reference(artifact: ModelArtifact, real_batch: np.ndarray) -> np.ndarray:
    with OnnxRuntimeBackend(artifact) as backend:
        return backend.infer(real_batch).probs


def test_fp32_matches_onnxruntime_and_chunks_keep_row_order(
    artifact: ModelArtifact, real_batch: np.ndarray, reference: np.ndarray, tmp_path: Path
) -> None:
    with OpenVinoBackend(artifact, precision="fp32", cache_dir=tmp_path) as backend:
        whole = backend.infer(real_batch)
        details = backend.describe()
    with OpenVinoBackend(artifact, precision="fp32", max_batch=3, cache_dir=tmp_path) as backend:
        chunked = backend.infer(real_batch)  # chunks of 3, 3, 2, each split over the parallel requests
        single = backend.infer(real_batch[5:6])
    np.testing.assert_allclose(whole.probs, reference, rtol=0, atol=1e-5)
    np.testing.assert_allclose(chunked.probs, whole.probs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(chunked.features, whole.features, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(single.probs, whole.probs[5:6], rtol=0, atol=1e-6)
    assert whole.features.shape == (8, artifact.manifest.num_features)
    assert details["compute_precision"] == "fp32" and details["parallel_requests"] >= 1 and "bf16_agreement" not in details


def test_base_class_guard_validation_and_empty_batch(artifact: ModelArtifact, tmp_path: Path) -> None:
    backend = OpenVinoBackend(artifact, precision="fp32", cache_dir=tmp_path)
    with pytest.raises(RuntimeError, match=r"OpenVinoBackend.infer called outside its `with` block"):
        backend.infer(np.zeros((1, 2, 3, 224, 224), np.float32))
    with backend:
        empty = backend.infer(np.zeros((0, 2, 3, 224, 224), np.float32))
        assert empty.probs.shape == (0, 4) and empty.features.shape == (0, artifact.manifest.num_features)
        with pytest.raises(InvalidBatchError, match=r"openvino runs on the CPU and takes a NumPy array; got builtins.list"):
            backend.infer([[0.0]])
        with pytest.raises(InvalidBatchError, match="dtype float64 is not float32"):
            backend.infer(np.zeros((1, 2, 3, 224, 224), np.float64))
    with pytest.raises(RuntimeError, match="outside its `with` block"):
        backend.infer(np.zeros((1, 2, 3, 224, 224), np.float32))


def test_bad_options_are_user_errors(artifact: ModelArtifact) -> None:
    with pytest.raises(UserInputError, match="precision must be one of auto, bf16, fp32"):
        OpenVinoBackend(artifact, precision="fp16")
    with pytest.raises(UserInputError, match="max_batch must be at least 1"):
        OpenVinoBackend(artifact, max_batch=0)


@pytest.mark.skipif(NATIVE_BF16, reason="checks a CPU without native bf16")
def test_bf16_is_refused_without_native_bf16(artifact: ModelArtifact, tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="has no native bf16"):
        OpenVinoBackend(artifact, precision="bf16", cache_dir=tmp_path).__enter__()
    with OpenVinoBackend(artifact, precision="auto", cache_dir=tmp_path) as backend:
        assert backend.precision == "fp32"


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16 (AVX512_BF16 / AMX-BF16)")
def test_bf16_gate_measures_stores_and_refuses(
    artifact: ModelArtifact, real_batch: np.ndarray, reference: np.ndarray, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="allbatch.backends")
    with OpenVinoBackend(artifact, precision="auto", cache_dir=tmp_path) as backend:
        assert backend.precision == "bf16"
        figures = backend.describe()["bf16_agreement"]
        probs = backend.infer(real_batch).probs
    sidecar = tmp_path / f"agreement-{backend.key_digest()}.json"
    stored = json.loads(sidecar.read_text())
    assert stored["n"] == 8 and stored["accepted"] is True and stored["key"]["precision"] == "bf16"
    assert figures["max_abs_prob_diff"] == pytest.approx(float(np.abs(probs - reference).max()), abs=1e-6)
    assert any("against ONNX Runtime fp32" in record.getMessage() for record in caplog.records)

    caplog.clear()
    with OpenVinoBackend(artifact, precision="bf16", cache_dir=tmp_path):
        pass
    assert any("agreement (stored)" in record.getMessage() for record in caplog.records)

    # Figures that fail the thresholds (as a model sensitive to bf16 would give) refuse the backend.
    sidecar.write_text(json.dumps({**stored, "argmax_agreement": 0.9, "max_abs_prob_diff": 0.3}))
    refused = OpenVinoBackend(artifact, precision="bf16", cache_dir=tmp_path)
    with pytest.raises(BackendUnavailableError, match=r"openvino bf16 refused: argmax agreement 0.9000.*use --precision fp32"):
        refused.__enter__()
    with pytest.raises(RuntimeError, match="outside its `with` block"):  # released again after the refusal
        refused.infer(real_batch)


def test_a_bf16_refusal_in_the_manifest_makes_auto_fp32_and_refuses_bf16(tiny_model: Path, tmp_path: Path) -> None:
    # a model measured on its validation images (factory/scripts/precision_agreement.py --openvino) whose bf16 failed the gate
    refused = load_model_artifact(tiny_model)
    refused.manifest.validation = {"openvino_bf16": {"accepted": False, "reason": "max |p16 - p32| 0.039 (<= 0.02 allowed)"}}
    with OpenVinoBackend(refused, precision="auto", cache_dir=tmp_path) as backend:
        assert backend.precision == "fp32" and "bf16_agreement" not in backend.describe()
    if NATIVE_BF16:  # an explicit bf16 is refused with the manifest's reason (without native bf16 it is refused anyway)
        with pytest.raises(BackendUnavailableError, match=r"0\.039.*validation\.openvino_bf16.*use --precision fp32"):
            OpenVinoBackend(refused, precision="bf16", cache_dir=tmp_path).__enter__()
    # an accepted verdict changes nothing: auto is what the CPU computes natively
    accepted = load_model_artifact(tiny_model)
    accepted.manifest.validation = {"openvino_bf16": {"accepted": True}}
    with OpenVinoBackend(accepted, precision="auto", cache_dir=tmp_path) as backend:
        assert backend.precision == ("bf16" if NATIVE_BF16 else "fp32")


def test_a_user_facing_bf16_verdict_sets_the_load_time_check_bound(tiny_model: Path, tmp_path: Path) -> None:
    from allbatch.backends.openvino_backend import bf16_check_bound, judge_bf16

    figures = {"argmax_agreement": 1.0, "max_abs_prob_diff": 0.07, "n": 8}
    plain = load_model_artifact(tiny_model)
    assert bf16_check_bound(plain) == 0.02 and not judge_bf16(figures, plain)[0]  # no verdict: the fixed 0.02
    gated = load_model_artifact(tiny_model)
    gated.manifest.validation = {"openvino_bf16": {"accepted": True, "gate": "user_facing_v1", "runtime_max_abs_prob_diff": 0.105}}
    accepted, reason = judge_bf16(figures, gated)
    assert bf16_check_bound(gated) == 0.105 and accepted and "user-facing" in reason
    assert not judge_bf16({**figures, "max_abs_prob_diff": 0.2}, gated)[0]  # a CPU whose bf16 moves more than measured
    assert not judge_bf16({**figures, "argmax_agreement": 0.9}, gated)[0]
    refused = load_model_artifact(tiny_model)  # a refusing verdict never loosens the bound
    refused.manifest.validation = {"openvino_bf16": {"accepted": False, "gate": "user_facing_v1", "runtime_max_abs_prob_diff": 0.5}}
    assert bf16_check_bound(refused) == 0.02
    if NATIVE_BF16:  # the gated model runs bf16 under auto, its stored check judged with the model's bound
        with OpenVinoBackend(gated, precision="auto", cache_dir=tmp_path) as backend:
            assert backend.precision == "bf16"
            assert backend.describe()["bf16_agreement"]["thresholds"]["max_abs_prob_diff"] == 0.105
