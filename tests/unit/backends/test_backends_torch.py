"""torch backend: parity with ONNX Runtime on the CPU (same committed weights), options, errors; GPU tests
(fp16 vs fp32, CUDA graphs, CuPy input) run only where CUDA is available.

Parity tolerance: max |p_torch - p_onnxruntime| < 1e-4 per probability (fp32 on both sides; the
fp16-stored weights are identical, only kernel order differs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from paths import REPO

from allbatch.backends.validate import InvalidBatchError
from allbatch.core.errors import BackendUnavailableError, ModelError, UserInputError
from allbatch.model.manifest import ModelArtifact, load_model_artifact

torch = pytest.importorskip("torch", reason="the torch backend needs torch")

from allbatch.backends.ort_backend import OnnxRuntimeBackend  # noqa: E402 - after the importorskip
from allbatch.backends.torch_backend import TorchBackend, load_torch_model  # noqa: E402

PARITY_ATOL = 1e-4
DEMO = REPO / "allbatch" / "demo"
CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def artifact(tiny_model: Path) -> ModelArtifact:
    return load_model_artifact(tiny_model)


@pytest.fixture(scope="module")
def demo_batch(artifact: ModelArtifact) -> np.ndarray:
    """(8, 2, 3, 224, 224) float32: the 8 shipped demo images prepared by the CPU reference path."""
    from allbatch.prepare.cpu import prepare_one

    files = sorted(DEMO.glob("*/*.jpg"))
    assert len(files) == 8
    manifest = artifact.manifest
    return np.stack([prepare_one(path.read_bytes(), manifest.prep, manifest.seg)[0] for path in files])


@pytest.fixture(scope="module")
def ort_probs(artifact: ModelArtifact, demo_batch: np.ndarray) -> np.ndarray:
    with OnnxRuntimeBackend(artifact, threads=1) as backend:
        return backend.infer(demo_batch).probs


@pytest.mark.parametrize("channels_last", [True, False])
def test_torch_cpu_matches_onnxruntime(artifact: ModelArtifact, demo_batch: np.ndarray, ort_probs: np.ndarray, channels_last: bool) -> None:
    with TorchBackend(artifact, device="cpu", precision="fp32", channels_last=channels_last) as backend:
        probs = backend.infer(demo_batch).probs
    assert probs.shape == (8, 4) and probs.dtype == np.float32 and isinstance(probs, np.ndarray)
    assert np.abs(probs - ort_probs).max() < PARITY_ATOL
    assert np.ptp(ort_probs, axis=0).max() > 1e-3, "the demo images should not all get the same probabilities"


def test_parity_check_detects_a_wrong_weight(artifact: ModelArtifact, demo_batch: np.ndarray, ort_probs: np.ndarray) -> None:
    """The parity tolerance is tight enough to see one BatchNorm statistic off by 0.05."""
    with TorchBackend(artifact, device="cpu", precision="fp32") as backend:
        assert backend._net is not None
        with torch.no_grad():
            backend._net.backbone.features.norm5.running_mean += 0.05
        probs = backend.infer(demo_batch).probs
    assert np.abs(probs - ort_probs).max() > 10 * PARITY_ATOL


def test_torch_tensor_input_and_chunking(artifact: ModelArtifact, demo_batch: np.ndarray, ort_probs: np.ndarray) -> None:
    with TorchBackend(artifact, device="cpu", precision="fp32", max_batch=3) as backend:
        from_numpy = backend.infer(demo_batch).probs  # chunks of 3, 3, 2
        from_tensor = backend.infer(torch.from_numpy(demo_batch)).probs
    assert from_numpy.shape == (8, 4)
    np.testing.assert_array_equal(from_numpy, from_tensor)
    assert np.abs(from_numpy - ort_probs).max() < PARITY_ATOL


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
    assert np.abs(probs - ort_probs).max() < PARITY_ATOL
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


# -- GPU (CUDA) --------------------------------------------------------------------------------------


@pytest.mark.gpu
@requires_cuda
def test_cuda_fp16_agrees_with_fp32_and_onnxruntime(artifact: ModelArtifact, demo_batch: np.ndarray, ort_probs: np.ndarray) -> None:
    with TorchBackend(artifact, precision="fp32") as fp32:
        reference = fp32.infer(demo_batch).probs
        details = fp32.describe()
    with TorchBackend(artifact, precision="fp16") as fp16:
        half = fp16.infer(demo_batch).probs
    assert details["cuda_version"] and details["compute_capability"]
    assert np.abs(reference - ort_probs).max() < PARITY_ATOL
    assert np.abs(half - reference).max() < 5e-3
    assert np.array_equal(half.argmax(axis=1), reference.argmax(axis=1))


@pytest.mark.gpu
@requires_cuda
def test_cuda_graphs_match_eager_for_full_and_partial_batches(artifact: ModelArtifact, demo_batch: np.ndarray) -> None:
    with TorchBackend(artifact, precision="fp32", max_batch=4, cuda_graphs=False) as eager:
        expected = eager.infer(demo_batch).probs
    with TorchBackend(artifact, precision="fp32", max_batch=4, cuda_graphs=True) as graphed:
        assert graphed._graph is not None  # captured in __enter__, before any producer thread runs
        full = graphed.infer(demo_batch).probs  # two replays of the size-4 graph
        partial = graphed.infer(demo_batch[:3]).probs  # padded into the size-4 graph
        single = graphed.infer(demo_batch[5:6]).probs  # padded as well: one graph serves every call
        again = graphed.infer(demo_batch).probs
        assert graphed.padded_rows == 1 + 3
    np.testing.assert_allclose(full, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(partial, expected[:3], rtol=0, atol=1e-5)
    np.testing.assert_allclose(single, expected[5:6], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(again, full)


@pytest.mark.gpu
@requires_cuda
def test_cuda_array_inputs_are_used_in_place(artifact: ModelArtifact, demo_batch: np.ndarray) -> None:
    with TorchBackend(artifact, precision="fp32") as backend:
        expected = backend.infer(demo_batch).probs
        on_device = torch.from_numpy(demo_batch).cuda()
        np.testing.assert_allclose(backend.infer(on_device).probs, expected, rtol=0, atol=1e-6)
        try:
            import cupy
        except ImportError:
            return
        stream = cupy.cuda.Stream(non_blocking=True)
        with stream:
            array = cupy.asarray(demo_batch)
        stream.synchronize()  # produced on another stream: finish it before handing it over (see module docs)
        np.testing.assert_allclose(backend.infer(array).probs, expected, rtol=0, atol=1e-6)
        with pytest.raises(InvalidBatchError, match="dtype float16"):
            backend.infer(array.astype(cupy.float16))
