"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.segment import SegmentationParams


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny two-channel DenseNet (``TINY`` config, 224 px input) exported like the shipped model: ONNX with
    fp16 weights and its manifest (``tiny.json``) beside it. Returns the ONNX path.

    BatchNorm statistics and affine parameters are randomised (seeded) so that a backend that loads a
    weight wrongly gives different probabilities, which untouched BatchNorm defaults would hide.
    """
    torch = pytest.importorskip("torch", reason="exporting the tiny model needs torch")
    from allbatch.model.config import TINY
    from allbatch.model.network import TwoChannelNet
    from allbatch.model.onnx_io import export_model_artifact

    torch.manual_seed(0)
    net = TwoChannelNet(TINY).eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
        net.head[1].weight.mul_(10.0)  # spread the probabilities so that differences between inputs show
        net.head[1].bias.uniform_(-0.5, 0.5)
    prep, seg = Preprocessing(), SegmentationParams()
    path = tmp_path_factory.mktemp("tiny_model") / "tiny.onnx"
    export_model_artifact(net, path, prep, seg)
    return path
