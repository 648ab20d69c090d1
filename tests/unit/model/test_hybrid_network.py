"""A hybrid head (pooled features + in-graph statistics): exported, it gives ONNX Runtime and OpenVINO the outputs
torch computes; its weights (the statistics' fp32 standardisation included) load back from the ONNX alone; and a
half-precision network keeps that standardisation in float32."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="building a network needs torch")

from paths import DEMO  # noqa: E402

from allbatch.backends.ort_backend import OnnxRuntimeBackend  # noqa: E402
from allbatch.model.config import TINY  # noqa: E402
from allbatch.model.manifest import load_model_artifact  # noqa: E402
from allbatch.model.network import ExportedNet, TwoChannelNet  # noqa: E402
from allbatch.model.onnx_io import export_model_artifact, load_network  # noqa: E402
from allbatch.prepare.preprocessing import Preprocessing  # noqa: E402
from allbatch.prepare.recipe import prepare_files  # noqa: E402
from allbatch.prepare.segment import SegmentationParams  # noqa: E402
from allbatch.qc.measures import unblanked_rows  # noqa: E402

PREP = Preprocessing(blank_bottom_fraction=0.21428571428571427)


def _hybrid(inputs: np.ndarray) -> TwoChannelNet:
    """A tiny hybrid network whose statistics are standardised on ``inputs`` (as a fit standardises them on train)."""
    torch.manual_seed(0)
    spec = {"mean": PREP.mean, "std": PREP.std, "rows": unblanked_rows(PREP), "bins": 12}
    net = TwoChannelNet(replace(TINY, extra={"statistics": spec})).eval()
    assert net.statistics is not None
    with torch.no_grad():
        raw = net.statistics.raw(torch.from_numpy(inputs))
        net.statistics.shift.copy_(raw.mean(0))
        net.statistics.scale.copy_(1.0 / (raw.std(0) + 1e-3))
        net.head[1].weight.normal_(0.0, 0.3)
    return net


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[TwoChannelNet, Path, np.ndarray]:
    inputs = prepare_files(sorted(DEMO.glob("*/*.jpg")), PREP, SegmentationParams())
    net = _hybrid(inputs)
    path = tmp_path_factory.mktemp("hybrid") / "hybrid.onnx"
    export_model_artifact(net, path, PREP, SegmentationParams(), temperature=0.5)
    return net, path, inputs


def test_exported_hybrid_matches_torch_in_onnxruntime_and_openvino(exported: tuple[TwoChannelNet, Path, np.ndarray]) -> None:
    net, path, inputs = exported
    with torch.no_grad():
        probs, logits, features = (t.numpy() for t in ExportedNet(net, 0.5)(torch.from_numpy(inputs)))
    artifact = load_model_artifact(path)
    with OnnxRuntimeBackend(artifact) as backend:
        out = backend.infer(inputs)
    assert features.shape[1] == 2 * net.backbone.num_features == out.features.shape[1]  # the QC features are the pooled ones
    np.testing.assert_allclose(out.logits, logits, atol=2e-2)  # the ONNX keeps fp16 weights
    assert (out.probs.argmax(1) == probs.argmax(1)).all()
    assert np.ptp(logits, axis=0).max() > 0.5  # the statistics move the logits between images
    pytest.importorskip("openvino")
    from allbatch.backends.openvino_backend import OpenVinoBackend

    with OpenVinoBackend(artifact, precision="fp32") as backend:
        np.testing.assert_allclose(backend.infer(inputs).logits, out.logits, atol=1e-3)


def test_hybrid_weights_load_back_with_an_exact_standardisation(exported: tuple[TwoChannelNet, Path, np.ndarray]) -> None:
    net, path, inputs = exported
    loaded = load_network(path, load_model_artifact(path).manifest.architecture)
    assert loaded.statistics is not None and net.statistics is not None
    assert torch.equal(loaded.statistics.shift, net.statistics.shift) and torch.equal(loaded.statistics.scale, net.statistics.scale)
    half = loaded.half()
    assert half.statistics is not None and half.statistics.shift.dtype == torch.float32
    with torch.no_grad():  # the torch backend feeds the float32 input beside the half backbone's features
        x = torch.from_numpy(inputs[:2])
        exact = net.statistics(x)
        from_half = half.statistics(x)
        joined = half.head_inputs(x, torch.zeros(2, 2 * half.backbone.num_features, dtype=torch.float16))
    np.testing.assert_allclose(from_half.numpy(), exact.numpy(), rtol=1e-6, atol=1e-6)
    assert joined.dtype == torch.float16 and joined.shape[1] == 2 * half.backbone.num_features + exact.shape[1]
