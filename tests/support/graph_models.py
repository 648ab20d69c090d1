"""Tiny hand-built ONNX models (``onnx.helper``) with allbatch's input, outputs and manifest, whose outputs the
tests choose: a model whose probabilities are NaN, one whose "probabilities" are not probabilities, one that
overflows only on bright images, one whose output widths are symbolic and wrong.

Each is a real artifact (ONNX file + manifest JSON with its sha256) that ``allbatch run --model`` loads and
every CPU backend runs. The graph: ``m`` = the mean of each (2, 3, S, S) input, shape (N, 1); then

- ``constant`` probs/logits: ``m * 0 + value`` (a (1, C) row broadcast to every image);
- otherwise ``s = sqrt(threshold - m)`` (NaN where the image's mean exceeds ``threshold``), logits ``s * w``,
  probs ``softmax(logits)``, features ``s`` repeated F times.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from allbatch import CLASS_NAMES
from allbatch.model.config import TINY
from allbatch.model.manifest import ModelManifest, manifest_path_for, sha256_of_file
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.segment import SegmentationParams

OPSET = 18


def _const(name: str, values: Sequence[float] | np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32).reshape(1, -1), name=name)


def write_graph_model(
    path: Path,
    *,
    probs: Sequence[float] | None = None,
    logits: Sequence[float] | None = None,
    threshold: float = 1e9,
    probs_width: int | None = None,
    symbolic_widths: bool = False,
) -> Path:
    """Write the model described in the module docstring to ``path`` (+ manifest); return ``path``.

    ``probs`` / ``logits``: constant rows (C values) instead of the computed ones. ``probs_width``: the width the
    graph really produces for probs and logits (default C); ``symbolic_widths``: declare the outputs' second
    dimension symbolic ("K", "F") so that the graph's declared shapes do not reveal a wrong width.
    """
    c = len(CLASS_NAMES)
    width = probs_width or c
    prep, seg = Preprocessing(), SegmentationParams()
    manifest = ModelManifest(
        name="graph_test_model",
        class_names=list(CLASS_NAMES),
        architecture=TINY.to_dict(),
        preprocessing=prep.to_dict(),
        segmentation=seg.to_dict(),
        input_shape=["N", 2, 3, prep.size, prep.size],
        weights_dtype="float32",
    )
    f = manifest.num_features
    nodes = [
        helper.make_node("ReduceMean", ["images", "axes"], ["m"], keepdims=1),  # (N, 1, 1, 1, 1)
        helper.make_node("Reshape", ["m", "col"], ["m2"]),  # (N, 1)
        helper.make_node("Sub", ["threshold", "m2"], ["d"]),
        helper.make_node("Sqrt", ["d"], ["s"]),
        helper.make_node("Mul", ["s", "zeros_f"], ["s0"]),
        helper.make_node("Add", ["s0", "s"], ["features"]),  # s broadcast to (N, F)
    ]
    inits = [
        numpy_helper.from_array(np.array([1, 2, 3, 4], dtype=np.int64), name="axes"),
        numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), name="col"),
        _const("threshold", [threshold]),
        _const("zeros_f", np.zeros(f)),
        _const("w", np.linspace(-1.0, 1.0, width)),
    ]
    if probs is not None or logits is not None:
        inits.append(_const("zeros_k", np.zeros(width)))
    if logits is None:
        nodes.append(helper.make_node("Mul", ["s", "w"], ["logits"]))
    else:
        inits.append(_const("logits_row", logits))
        nodes += [helper.make_node("Mul", ["m2", "zeros_k"], ["lz"]), helper.make_node("Add", ["lz", "logits_row"], ["logits"])]
    if probs is None:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
    else:
        inits.append(_const("probs_row", probs))
        nodes += [helper.make_node("Mul", ["m2", "zeros_k"], ["pz"]), helper.make_node("Add", ["pz", "probs_row"], ["probs"])]
    size = prep.size
    k_dim: int | str = "K" if symbolic_widths else width
    f_dim: int | str = "F" if symbolic_widths else f
    graph = helper.make_graph(
        nodes,
        "graph_test_model",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 2, 3, size, size])],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", k_dim]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k_dim]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", f_dim]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="allbatch-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    manifest.onnx_sha256 = sha256_of_file(path)
    manifest_path_for(path).write_text(manifest.to_json() + "\n", encoding="utf-8")
    return path
