"""Quality-control measures on the GPU: the CuPy path equals the NumPy path (input measures, confidence measures,
the Mahalanobis distance). Skipped without CuPy and a CUDA GPU."""

from __future__ import annotations

import numpy as np
import pytest
from dali_support import cuda_reason
from qc_support import PREP, model_inputs

from allbatch.qc.measures import confidence_measures, input_measures, mahalanobis_distance

_NO_CUDA = cuda_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_NO_CUDA is not None, reason=f"needs CuPy and a CUDA GPU: {_NO_CUDA}")]


def test_cupy_measures_equal_numpy() -> None:
    import cupy

    rng = np.random.default_rng(5)
    originals = rng.integers(0, 256, (5, PREP.size, PREP.size, 3), dtype=np.uint8)
    segmented = np.where(rng.random((5, PREP.size, PREP.size, 1)) > 0.95, originals, 0).astype(np.uint8)
    inputs = model_inputs(originals, segmented)
    cpu = input_measures(inputs, PREP)
    gpu = input_measures(cupy.asarray(inputs), PREP)
    np.testing.assert_allclose(gpu["blur"].get(), cpu["blur"], rtol=1e-4)
    np.testing.assert_allclose(gpu["colour"].get(), cpu["colour"], rtol=1e-5)
    np.testing.assert_allclose(gpu["stain_hue"].get(), cpu["stain_hue"], atol=1e-3)
    np.testing.assert_array_equal(gpu["components"].get(), cpu["components"])
    logits = rng.normal(size=(5, 4)).astype(np.float32)
    for key, value in confidence_measures(cupy.asarray(logits)).items():
        np.testing.assert_allclose(value.get(), confidence_measures(logits)[key], rtol=1e-5, atol=1e-6)
    features = rng.normal(size=(5, 16)).astype(np.float32)
    means = rng.normal(size=(4, 16)).astype(np.float32)
    basis = np.linalg.qr(rng.normal(size=(16, 3)))[0].T.astype(np.float32)
    variances = np.array([0.3, 0.2, 0.1], dtype=np.float32)
    expected = mahalanobis_distance(features, means, basis, variances, 0.01)
    on_gpu = mahalanobis_distance(cupy.asarray(features), cupy.asarray(means), cupy.asarray(basis), cupy.asarray(variances), 0.01)
    np.testing.assert_allclose(on_gpu.get(), expected, rtol=1e-4)
