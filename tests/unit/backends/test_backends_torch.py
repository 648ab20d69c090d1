"""torch backend: parity with ONNX Runtime on the CPU (same committed weights), options, errors. On CUDA (fp16 vs
fp32, CUDA graphs, CuPy input): tests/gpu/test_torch_backend_cuda.py.

Parity tolerance: ``backend_support.TORCH_PARITY_ATOL`` per probability.
"""

from __future__ import annotations

from pathlib import Path

import backend_support
import numpy as np
import pytest
from backend_support import TORCH_PARITY_ATOL

from allbatch.backends.validate import InvalidBatchError
from allbatch.core.errors import BackendUnavailableError, ModelError, UserInputError
from allbatch.model.manifest import ModelArtifact, load_model_artifact

torch = pytest.importorskip("torch", reason="the torch backend needs torch")

from allbatch.backends.torch_backend import TorchBackend, load_torch_model  # noqa: E402

CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def artifact(tiny_model: Path) -> ModelArtifact:
    return load_model_artifact(tiny_model)


@pytest.fixture(scope="module")
def demo_batch(artifact: ModelArtifact) -> np.ndarray:
    return backend_support.demo_batch(artifact)


@pytest.fixture(scope="module")
def ort_probs(artifact: ModelArtifact, demo_batch: np.ndarray) -> np.ndarray:
    return backend_support.onnxruntime_probs(artifact, demo_batch)


@pytest.mark.parametrize("channels_last", [True, False])
def test_torch_cpu_matches_onnxruntime(artifact: ModelArtifact, demo_batch: np.ndarray, ort_probs: np.ndarray, channels_last: bool) -> None:
    with TorchBackend(artifact, device="cpu", precision="fp32", channels_last=channels_last) as backend:
        probs = backend.infer(demo_batch).probs
    assert probs.shape == (8, 4) and probs.dtype == np.float32 and isinstance(probs, np.ndarray)
    assert np.abs(probs - ort_probs).max() < TORCH_PARITY_ATOL
    assert np.ptp(ort_probs, axis=0).max() > 1e-3, "the demo images should not all get the same probabilities"


def test_parity_check_detects_a_wrong_weight(artifact: ModelArtifact, demo_batch: np.ndarray, ort_probs: np.ndarray) -> None:
    """The parity tolerance is tight enough to see one BatchNorm statistic off by 0.05."""
    with TorchBackend(artifact, device="cpu", precision="fp32") as backend:
        assert backend._net is not None
        with torch.no_grad():
            backend._net.backbone.features.norm5.running_mean += 0.05
        probs = backend.infer(demo_batch).probs
    assert np.abs(probs - ort_probs).max() > 10 * TORCH_PARITY_ATOL


def test_torch_tensor_input_and_chunking(artifact: ModelArtifact, demo_batch: np.ndarray, ort_probs: np.ndarray) -> None:
    with TorchBackend(artifact, device="cpu", precision="fp32", max_batch=3) as backend:
        from_numpy = backend.infer(demo_batch).probs  # chunks of 3, 3, 2
        from_tensor = backend.infer(torch.from_numpy(demo_batch)).probs
    assert from_numpy.shape == (8, 4)
    np.testing.assert_array_equal(from_numpy, from_tensor)
    assert np.abs(from_numpy - ort_probs).max() < TORCH_PARITY_ATOL


def test_fp16_on_cpu_stays_close(artifact: ModelArtifact, demo_batch: np.ndarray, ort_probs: np.ndarray) -> None:
    with TorchBackend(artifact, device="cpu", precision="fp16") as backend:
        probs = backend.infer(demo_batch[:2]).probs
    assert probs.dtype == np.float32
    assert np.abs(probs - ort_probs[:2]).max() < 5e-3


@pytest.mark.parametrize(
    ("batch", "error"),
    [
        (np.zeros((1, 2, 3, 64, 64), dtype=np.float32), r"shape \(1, 2, 3, 64, 64\) does not match"),
        (np.zeros((1, 2, 3, 224, 224), dtype=np.float64), "dtype float64 is not float32"),
        (torch.zeros((1, 2, 3, 224, 224), dtype=torch.float16), "dtype float16 is not float32"),
        ("images", "unsupported batch type builtins.str"),
    ],
)
def test_invalid_batches_raise(artifact: ModelArtifact, batch: object, error: str) -> None:
    with TorchBackend(artifact, device="cpu", precision="fp32") as backend, pytest.raises(InvalidBatchError, match=error):
        backend.infer(batch)


def test_cuda_without_gpu_is_unavailable_with_reason(artifact: ModelArtifact) -> None:
    if CUDA:
        pytest.skip("this machine has CUDA")
    backend = TorchBackend(artifact)  # device="cuda" by default
    with pytest.raises(BackendUnavailableError, match="CUDA not available"), backend:
        pass


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"precision": "int8"}, "precision must be fp16 or fp32"),
        ({"device": "gpu"}, "device must be 'cuda', 'cuda:N' or 'cpu'"),
        ({"max_batch": 0}, "max_batch must be at least 1"),
        ({"device": "cpu", "cuda_graphs": True}, "CUDA graphs need a CUDA device"),
    ],
)
def test_bad_options_are_user_errors(artifact: ModelArtifact, kwargs: dict[str, object], error: str) -> None:
    with pytest.raises(UserInputError, match=error):
        TorchBackend(artifact, **kwargs)  # type: ignore[arg-type]


def test_weights_that_do_not_fit_the_architecture_are_a_model_error(artifact: ModelArtifact) -> None:
    from dataclasses import replace

    wider = {**artifact.manifest.architecture, "growth_rate": 12}
    with pytest.raises(ModelError, match="weights do not fit"):
        load_torch_model(replace(artifact, manifest=replace(artifact.manifest, architecture=wider)))


def test_static_shapes_pad_the_last_partial_chunk_on_the_cpu(
    artifact: ModelArtifact, demo_batch: np.ndarray, ort_probs: np.ndarray
) -> None:
    """The bookkeeping that CUDA graphs and cuDNN autotuning rely on, run on the CPU with capture off: every
    forward sees exactly (max_batch, ...) rows, padding rows are zero and never returned."""
    seen: list[tuple[int, ...]] = []
    with TorchBackend(artifact, device="cpu", precision="fp32", max_batch=3, static_shapes=True) as backend:
        assert backend._net is not None
        hook = backend._net.backbone.register_forward_pre_hook(lambda _module, args: seen.append(tuple(args[0].shape)))
        probs = backend.infer(demo_batch).probs  # chunks of 3, 3 and 2 (+1 padding row)
        assert backend.padded_rows == 1
        alone = backend.infer(demo_batch[7:8]).probs  # after a full chunk: the stale rows must not matter
        assert backend.padded_rows == 3
        assert backend.describe()["static_shapes"] is True
        assert backend._static_in is not None and not backend._static_in[1:].any()  # the padding is zeros
        hook.remove()
    assert seen == [(6, 3, 224, 224)] * 4  # 3 rows x 2 channels each time, never the partial 2 or 1
    assert probs.shape == (8, 4) and alone.shape == (1, 4)
    assert np.abs(probs - ort_probs).max() < TORCH_PARITY_ATOL
    np.testing.assert_allclose(alone[0], probs[7], rtol=0, atol=1e-6)


def test_static_shapes_default_on_cuda_only(artifact: ModelArtifact) -> None:
    assert TorchBackend(artifact, device="cpu").static_shapes is False
    assert TorchBackend(artifact, device="cuda").static_shapes is True
    with pytest.raises(UserInputError, match="CUDA graphs replay one fixed input shape"):
        TorchBackend(artifact, cuda_graphs=True, static_shapes=False)


def test_fp32_reference_math_uses_the_new_tf32_api_and_restores_it() -> None:
    """torch >= 2.9: reading a legacy allow_tf32 flag after the new fp32_precision API was used raises, so the
    backend must not touch the legacy flags (this runs on a CPU build too: the flags are process-wide)."""
    import warnings

    from allbatch.backends.torch_backend import use_fp32_reference_math

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    if not hasattr(cudnn, "conv"):
        pytest.skip(f"torch {torch.__version__} has only the legacy TF32 flags")
    before = (cudnn.conv.fp32_precision, matmul.fp32_precision)
    cudnn.conv.fp32_precision = "tf32"  # someone chose the new API before us
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # and no deprecation warning either
            restore = use_fp32_reference_math(torch)
            assert (cudnn.conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
            restore()
        assert cudnn.conv.fp32_precision == "tf32" and matmul.fp32_precision == before[1]
    finally:
        cudnn.conv.fp32_precision, matmul.fp32_precision = before
