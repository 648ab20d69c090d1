"""Which model a benchmark runs: the one asked for, the shipped one, or an untrained export of the same
architecture (speed does not depend on the weights' values, only on the graph and its shapes)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from allbatch.errors import ModelError
from allbatch.manifest import DEFAULT_MODEL, ModelArtifact, load_model_artifact, manifest_path_for
from allbatch.model.config import DENSENET201, ModelConfig
from allbatch.preprocess import Preprocessing
from allbatch.segment import SegmentationParams

log = logging.getLogger("allbatch.bench")

DEFAULT_CACHE = Path(tempfile.gettempdir()) / "allbatch-bench-models"
UNTRAINED_NOTE = "untrained: random initialisation (seed 0), exported for speed measurements only"


def untrained_model(config: ModelConfig = DENSENET201, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The ONNX path of an untrained ``config`` network exported like the shipped model (fp16 weights +
    manifest), built once into ``cache_dir`` and reused while it verifies. Needs torch."""
    path = cache_dir / f"{config.name}-untrained.onnx"
    if path.is_file() and manifest_path_for(path).is_file():
        try:
            load_model_artifact(path)
            return path
        except ModelError as exc:
            log.warning("rebuilding the cached untrained model: %s", exc)
    import torch

    from allbatch.model.network import TwoChannelNet
    from allbatch.model.onnx_io import export_model_artifact

    cache_dir.mkdir(parents=True, exist_ok=True)
    log.info("exporting an untrained %s to %s (once; takes a minute for DenseNet201)", config.name, path)
    torch.manual_seed(0)
    net = TwoChannelNet(config).eval()
    prep, seg = Preprocessing(), SegmentationParams()
    export_model_artifact(net, path, prep, seg, training={"weights": UNTRAINED_NOTE})
    return path


def resolve_bench_model(model: Path | None) -> ModelArtifact:
    """``model`` if given; else the shipped model when present; else the cached untrained DenseNet201.

    Raises:
        ModelError: ``model`` (or the shipped model) does not load or verify.
    """
    if model is not None:
        return load_model_artifact(model)
    if DEFAULT_MODEL.is_file():
        return load_model_artifact(DEFAULT_MODEL)
    log.warning("no shipped model at %s: benchmarking an untrained DenseNet201 (same graph, same speed)", DEFAULT_MODEL)
    return load_model_artifact(untrained_model())


def describe_model(artifact: ModelArtifact) -> dict[str, object]:
    """Name, path, sha256, size and whether the weights were trained, for the benchmark report."""
    manifest = artifact.manifest
    untrained = manifest.training.get("weights") == UNTRAINED_NOTE
    return {
        "path": str(artifact.onnx_path),
        "name": manifest.name,
        "sha256": artifact.sha256,
        "size_mib": round(artifact.onnx_path.stat().st_size / (1 << 20), 1),
        "architecture": manifest.architecture,
        "full_densenet201": manifest.architecture == DENSENET201.to_dict(),
        "weights": "untrained (random init)" if untrained else "trained",
    }
