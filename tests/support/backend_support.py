"""Shared helpers for the backend tests: the demo batch and ONNX Runtime's fp32 answer on it."""

from __future__ import annotations

import numpy as np

from allbatch.backends.fp16_check import DEFAULT_CHECK_IMAGES, check_inputs_from_folder
from allbatch.backends.ort_backend import OnnxRuntimeBackend
from allbatch.model.manifest import ModelArtifact

TORCH_PARITY_ATOL = 1e-4
"""torch fp32 (CPU, or CUDA with TF32 off) against ONNX Runtime fp32: max |dp| per probability (the fp16-stored
weights are identical, only the order of the kernels' sums differs)."""


def demo_batch(artifact: ModelArtifact) -> np.ndarray:
    """(8, 2, 3, S, S) float32, host: the eight shipped demo smears prepared by the CPU recipe as ``artifact`` says."""
    batch = check_inputs_from_folder(DEFAULT_CHECK_IMAGES, artifact)
    assert len(batch) == 8, "the package ships eight demo smears"
    return batch


def onnxruntime_probs(artifact: ModelArtifact, batch: np.ndarray) -> np.ndarray:
    """(N, C) float32 probabilities of ONNX Runtime fp32 on one thread: the reference."""
    with OnnxRuntimeBackend(artifact, threads=1) as backend:
        return backend.infer(batch).probs
