"""The torch backend on CUDA: fp16 agrees with fp32 and with ONNX Runtime, CUDA graphs match eager runs for full and
partial batches, CUDA arrays (torch, CuPy) are used in place. Skipped without a CUDA GPU."""

from __future__ import annotations

from pathlib import Path

import backend_support
import numpy as np
import pytest
from backend_support import TORCH_PARITY_ATOL

from allbatch.backends.validate import InvalidBatchError
from allbatch.model.manifest import ModelArtifact, load_model_artifact

torch = pytest.importorskip("torch", reason="the torch backend needs torch")

from allbatch.backends.torch_backend import TorchBackend  # noqa: E402 - after the importorskip

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def artifact(tiny_model: Path) -> ModelArtifact:
    return load_model_artifact(tiny_model)


@pytest.fixture(scope="module")
def demo_batch(artifact: ModelArtifact) -> np.ndarray:
    return backend_support.demo_batch(artifact)


@pytest.fixture(scope="module")
def ort_probs(artifact: ModelArtifact, demo_batch: np.ndarray) -> np.ndarray:
    return backend_support.onnxruntime_probs(artifact, demo_batch)


def test_cuda_fp16_agrees_with_fp32_and_onnxruntime(artifact: ModelArtifact, demo_batch: np.ndarray, ort_probs: np.ndarray) -> None:
    with TorchBackend(artifact, precision="fp32") as fp32:
        reference = fp32.infer(demo_batch).probs
        details = fp32.describe()
    with TorchBackend(artifact, precision="fp16") as fp16:
        half = fp16.infer(demo_batch).probs
    assert details["cuda_version"] and details["compute_capability"]
    assert np.abs(reference - ort_probs).max() < TORCH_PARITY_ATOL
    assert np.abs(half - reference).max() < 5e-3
    assert np.array_equal(half.argmax(axis=1), reference.argmax(axis=1))


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
