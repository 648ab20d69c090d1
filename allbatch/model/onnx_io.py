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
from allbatch.manifest import ModelManifest, manifest_path_for, sha256_of_file
from allbatch.model.network import ProbabilityNet, TwoChannelNet
from allbatch.preprocess import Preprocessing
from allbatch.segment import SegmentationParams

FP16_SUFFIX = ".fp16"
OPSET = 18


def export_fp32_onnx(net: TwoChannelNet, path: Path, size: int) -> None:
    """Export ``softmax(net(x))`` with a dynamic batch axis: input ``images`` (N, 2, 3, size, size)
    float32, output ``probs`` (N, classes) float32. The graph is left unoptimised so that parameter
    names survive; ONNX Runtime and TensorRT fuse it when they load it."""
    wrapper = ProbabilityNet(net).eval()
    example = torch.zeros(2, 2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["probs"],
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
        if init.data_type != onnx.TensorProto.FLOAT:
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


def export_onnx(net: TwoChannelNet, path: Path, size: int) -> None:
    """Export ``net`` to ``path`` as ONNX with fp16 weights (see module docstring); checked by onnx."""
    tmp = path.with_suffix(".fp32.onnx")
    export_fp32_onnx(net, tmp, size)
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
) -> ModelManifest:
    """Export ``net`` to ``path`` (fp16-weight ONNX) and write its manifest beside it; returns the manifest."""
    export_onnx(net, path, prep.size)
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
    )
    manifest_path_for(path).write_text(manifest.to_json() + "\n", encoding="utf-8")
    return manifest
