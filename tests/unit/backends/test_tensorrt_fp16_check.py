"""FP16 acceptance without TensorRT: the agreement figures, the verdict, the real check images and the fp32
reference; plus the whole check on a real fp16 computation (torch fp16 on the CPU vs ONNX Runtime fp32)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from allbatch.backends.fp16_check import (
    DEFAULT_CHECK_IMAGES,
    FP16_MAX_ABS_PROB_DIFF,
    FP16_MIN_ARGMAX_AGREEMENT,
    check_inputs_from_folder,
    fp16_agreement,
    judge_fp16,
    reference_probs,
)
from allbatch.backends.ort_backend import OnnxRuntimeBackend
from allbatch.core.errors import UserInputError
from allbatch.model.manifest import ModelArtifact, load_model_artifact


def test_thresholds_are_the_documented_ones() -> None:
    assert FP16_MIN_ARGMAX_AGREEMENT == 0.995
    assert FP16_MAX_ABS_PROB_DIFF == 0.02


def test_agreement_figures() -> None:
    ref = np.array([[0.7, 0.1, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1], [0.1, 0.1, 0.1, 0.7], [0.25, 0.25, 0.4, 0.1]], np.float32)
    low = ref.copy()
    low[3] = [0.26, 0.45, 0.19, 0.10]  # row 3 flips from class 2 to class 1, biggest change 0.21
    low[0, 0] += 0.005
    figures = fp16_agreement(low, ref)
    assert figures["n"] == 4
    assert figures["argmax_agreement"] == pytest.approx(0.75)
    assert figures["max_abs_prob_diff"] == pytest.approx(0.21, abs=1e-6)
    assert fp16_agreement(ref, ref) == {"argmax_agreement": 1.0, "max_abs_prob_diff": 0.0, "n": 4}


def test_non_finite_fp16_output_is_total_disagreement() -> None:
    ref = np.full((3, 4), 0.25, np.float32)
    low = ref.copy()
    low[1, 2] = np.nan
    figures = fp16_agreement(low, ref)
    assert figures["argmax_agreement"] == 0.0 and figures["max_abs_prob_diff"] == float("inf")
    assert judge_fp16(figures)[0] is False


@pytest.mark.parametrize(
    ("low", "ref"),
    [(np.zeros((2, 4)), np.zeros((3, 4))), (np.zeros(4), np.zeros(4)), (np.zeros((0, 4)), np.zeros((0, 4)))],
)
def test_agreement_rejects_bad_shapes(low: np.ndarray, ref: np.ndarray) -> None:
    with pytest.raises(ValueError):
        fp16_agreement(low, ref)


@pytest.mark.parametrize(
    ("agreement", "diff", "accepted"),
    [
        (1.0, 0.0, True),
        (0.995, 0.02, True),  # both limits are inclusive
        (0.994, 0.0, False),
        (1.0, 0.0201, False),
        (1.0, float("nan"), False),
    ],
)
def test_verdict(agreement: float, diff: float, accepted: bool) -> None:
    ok, reason = judge_fp16({"argmax_agreement": agreement, "max_abs_prob_diff": diff, "n": 200})
    assert ok is accepted
    assert "argmax agreement" in reason and "on 200 images" in reason and "\n" not in reason


def test_one_flip_in_200_is_the_limit() -> None:
    ref = np.tile(np.array([[0.6, 0.2, 0.1, 0.1]], np.float32), (200, 1))
    low = ref.copy()
    low[0] = [0.2, 0.6, 0.1, 0.1]
    figures = fp16_agreement(low, ref)
    assert figures["argmax_agreement"] == 0.995
    low[1] = [0.2, 0.6, 0.1, 0.1]
    assert fp16_agreement(low, ref)["argmax_agreement"] == 0.99


def test_check_inputs_are_the_real_demo_images(tmp_path: Path) -> None:
    artifact = load_model_artifact()
    inputs = check_inputs_from_folder(DEFAULT_CHECK_IMAGES, artifact)
    assert inputs.shape == (8, 2, 3, 224, 224) and inputs.dtype == np.float32
    assert np.isfinite(inputs).all() and inputs.std() > 0.1
    spread = check_inputs_from_folder(DEFAULT_CHECK_IMAGES, artifact, limit=3)
    # First, middle and last of the 8 sorted images (Benign ... Pro).
    np.testing.assert_array_equal(spread, inputs[[0, 4, 7]])
    with pytest.raises(UserInputError, match="not found"):
        check_inputs_from_folder(tmp_path / "absent", artifact)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserInputError, match="no decodable image"):
        check_inputs_from_folder(tmp_path, artifact)


@pytest.fixture(scope="module")
def tiny_artifact(tiny_model: Path) -> ModelArtifact:
    return load_model_artifact(tiny_model)


def test_reference_is_onnxruntime_fp32_in_chunks(tiny_artifact: ModelArtifact) -> None:
    inputs = check_inputs_from_folder(DEFAULT_CHECK_IMAGES, tiny_artifact)
    probs = reference_probs(tiny_artifact, inputs, batch_size=3)  # 3 + 3 + 2 rows
    with OnnxRuntimeBackend(tiny_artifact) as backend:
        whole = backend.infer(inputs).probs
    assert probs.shape == (8, 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, whole, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_check_on_a_real_fp16_computation(tiny_artifact: ModelArtifact) -> None:
    """The same network in fp16 (torch on the CPU) against the fp32 reference on the real demo images: fp16
    rounding must leave it within the thresholds, while fp16 inputs with noise of 0.5 (about 1/8 of the input
    range) must not be."""
    torch = pytest.importorskip("torch")
    from allbatch.backends.torch_backend import load_torch_model

    inputs = check_inputs_from_folder(DEFAULT_CHECK_IMAGES, tiny_artifact)
    reference = reference_probs(tiny_artifact, inputs)
    net = load_torch_model(tiny_artifact).half()

    def fp16_probs(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = net.forward_head(net.forward_features(torch.from_numpy(x).half()))
            return torch.softmax(logits.float(), dim=1).numpy()

    figures = fp16_agreement(fp16_probs(inputs), reference)
    accepted, reason = judge_fp16(figures)
    assert accepted, reason
    assert 0.0 < figures["max_abs_prob_diff"] < FP16_MAX_ABS_PROB_DIFF  # fp16 does change the numbers (measured: 3.5e-4)

    noisy = inputs + np.random.default_rng(0).normal(0.0, 0.5, inputs.shape).astype(np.float32)
    assert judge_fp16(fp16_agreement(fp16_probs(noisy), reference))[0] is False  # measured: max diff 0.065
