"""ONNX export with fp16 weights, and reading those weights back into torch (train / torch extras).

The exported graph keeps every parameter under its torch ``state_dict`` name (stored as
``<name>.fp16`` in float16 and cast to float32 by a ``Cast`` node), so the torch backend can rebuild
the network from the committed ONNX and its manifest alone, with no second weight file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from allbatch import CLASS_NAMES
from allbatch.model.config import ModelConfig
from allbatch.model.manifest import OUTPUT_NAMES, ModelManifest, manifest_path_for, sha256_of_file
from allbatch.model.network import ExportedNet, TwoChannelNet
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.segment import SegmentationParams

FP16_SUFFIX = ".fp16"
OPSET = 18
FP32_INITIALIZERS = ("temperature", "net.statistics.luma", "net.statistics.shift", "net.statistics.scale")
"""Initializers kept in float32: the temperature, and the hybrid head's statistics constants (a standardisation
shift rounded to fp16 and multiplied by a large scale would move a statistic by whole standard deviations)."""


def export_fp32_onnx(net: TwoChannelNet, path: Path, size: int, temperature: float = 1.0) -> None:
    """Export ``ExportedNet(net, temperature)`` with a dynamic batch axis: input ``images`` (N, 2, 3, size,
    size) float32; outputs ``probs`` (N, C), ``logits`` (N, C) and ``features`` (N, 2F), float32. The graph
    is left unoptimised so that parameter names survive; ONNX Runtime and TensorRT fuse it when they load it."""
    wrapper = ExportedNet(net, temperature).eval()
    example = torch.zeros(2, 2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            input_names=["images"],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=({0: torch.export.Dim("N", min=1, max=4096)},),
            dynamo=True,
            optimize=False,
            opset_version=OPSET,
            verbose=False,
        )


def convert_weights_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Store every float32 initializer as float16 (``<name>.fp16``) plus a Cast back to float32.

    Halves the artifact; compute stays float32 in ONNX Runtime (the casts are constant-folded).
    """
    graph = model.graph
    casts = []
    kept = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or init.name in FP32_INITIALIZERS:  # these stay exact
            kept.append(init)
            continue
        values = numpy_helper.to_array(init).astype(np.float16)
        kept.append(numpy_helper.from_array(values, name=init.name + FP16_SUFFIX))
        casts.append(helper.make_node("Cast", [init.name + FP16_SUFFIX], [init.name], to=onnx.TensorProto.FLOAT))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    return model


def strip_debug_metadata(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node stack traces and doc strings (megabytes in DenseNet201)."""
    for node in model.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
    for value in list(model.graph.value_info):
        del value.metadata_props[:]


def export_onnx(net: TwoChannelNet, path: Path, size: int, temperature: float = 1.0) -> None:
    """Export ``net`` to ``path`` as ONNX with fp16 weights (see module docstring); checked by onnx."""
    tmp = path.with_suffix(".fp32.onnx")
    export_fp32_onnx(net, tmp, size, temperature)
    model = onnx.load(str(tmp))
    tmp.unlink()
    for leftover in path.parent.glob(tmp.name + "*.data"):
        leftover.unlink()
    model = convert_weights_to_fp16(model)
    strip_debug_metadata(model)
    model.producer_name = "allbatch"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def state_dict_from_onnx(model: onnx.ModelProto, net: TwoChannelNet) -> dict[str, torch.Tensor]:
    """The torch ``state_dict`` for ``net`` read from an exported graph (float32 tensors, host).

    Raises:
        KeyError: a parameter or buffer of ``net`` is missing from the graph.
    """
    stored = {}
    prefix = "net."
    for init in model.graph.initializer:
        name = init.name[: -len(FP16_SUFFIX)] if init.name.endswith(FP16_SUFFIX) else init.name
        if name.startswith(prefix):
            stored[name[len(prefix) :]] = init
    state = {}
    for key, reference in net.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = reference
            continue
        if key not in stored:
            raise KeyError(f"parameter {key} not found in the ONNX graph")
        values = numpy_helper.to_array(stored[key]).astype(np.float32)
        if tuple(values.shape) != tuple(reference.shape):
            raise KeyError(f"parameter {key} has shape {values.shape} in ONNX, {tuple(reference.shape)} in the network")
        state[key] = torch.from_numpy(values.copy())
    return state


def export_model_artifact(
    net: TwoChannelNet,
    path: Path,
    prep: Preprocessing,
    seg: SegmentationParams,
    training: dict[str, Any] | None = None,
    validation: dict[str, Any] | None = None,
    temperature: float = 1.0,
    extra: dict[str, Any] | None = None,
) -> ModelManifest:
    """Export ``net`` to ``path`` (fp16-weight ONNX) and write its manifest beside it; returns the manifest.

    ``extra`` sets further manifest fields by name (e.g. quality-control statistics).
    """
    export_onnx(net, path, prep.size, temperature)
    manifest = ModelManifest(
        name=net.config.name,
        class_names=list(CLASS_NAMES),
        architecture=net.config.to_dict(),
        preprocessing=prep.to_dict(),
        segmentation=seg.to_dict(),
        onnx_sha256=sha256_of_file(path),
        input_shape=["N", 2, 3, prep.size, prep.size],
        opset=OPSET,
        training=training or {},
        validation=validation or {},
        temperature=float(temperature),
        **(extra or {}),
    )
    manifest_path_for(path).write_text(manifest.to_json() + "\n", encoding="utf-8")
    return manifest


def load_network(onnx_path: Path, architecture: dict[str, Any]) -> TwoChannelNet:
    """``TwoChannelNet`` built from a manifest ``architecture`` with the graph's initializers as weights
    (float32, host, eval mode); works for any manifest format, so old artifacts can be re-exported.

    Raises:
        KeyError: a parameter is missing from the graph or has another shape.
    """
    net = TwoChannelNet(ModelConfig.from_dict(architecture))
    net.load_state_dict(state_dict_from_onnx(onnx.load(str(onnx_path)), net))
    return net.eval()


def reexport_artifact(
    source: Path, target: Path, temperature: float | None = None, net: TwoChannelNet | None = None, **changes: Any
) -> ModelManifest:
    """Export the weights of the artifact at ``source`` again to ``target`` with this allbatch's graph
    outputs and manifest format, keeping the manifest's records (training, validation, ...).

    Args:
        source: an exported ONNX file with its manifest JSON beside it (any manifest format).
        target: where the new ONNX goes (may equal ``source``); its manifest is written beside it.
        temperature: the logit temperature to put into the graph; ``None`` keeps the source's (1.0 if none).
        net: weights to export instead of the source's (e.g. a refitted head); same architecture.
        changes: manifest fields to replace (e.g. ``validation=...``).
    """
    import json
    from dataclasses import fields

    data = json.loads(manifest_path_for(source).read_text(encoding="utf-8"))
    if net is None:
        net = load_network(source, data["architecture"])
    keep = {f.name for f in fields(ModelManifest)} - {
        "onnx_sha256",
        "output_names",
        "format_version",
        "temperature",
        "opset",
        "input_shape",
    }
    records = {key: value for key, value in data.items() if key in keep}
    records.update(changes)
    temperature = float(data.get("temperature", 1.0)) if temperature is None else temperature
    export_onnx(net, target, int(data["input_shape"][-1]), temperature)
    manifest = ModelManifest(
        **{
            **records,
            "onnx_sha256": sha256_of_file(target),
            "input_shape": data["input_shape"],
            "temperature": float(temperature),
            "opset": OPSET,
        }
    )
    manifest_path_for(target).write_text(manifest.to_json() + "\n", encoding="utf-8")
    return manifest
