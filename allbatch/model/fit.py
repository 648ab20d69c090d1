"""Does a model artifact fit allbatch? Checked before any inference runtime loads and before anything
is written, so that a wrong model is refused in one line instead of failing in the first batch.

The manifest's sha256 check (``manifest.load_model_artifact``) proves that the manifest belongs to
the file; this checks that both describe a model allbatch can feed and read:

- preprocessing: a known field set, input size >= 16 px, finite mean, finite std > 0, blanked fraction
  in [0, 1), a resize mode the preparers implement; segmentation parameters of the known fields;
- the manifest's ``input_shape`` is [N, 2, 3, size, size] with the preprocessing's size;
- the ONNX graph (read with the ``onnx`` package, a core dependency, no runtime) has one real input,
  named as the manifest says, float32 (N, 2, 3, size, size), and the manifest's outputs: ``probs`` and
  ``logits`` float32 (N, number of classes), ``features`` float32 (N, F) with F from the architecture.
  Dimensions the graph leaves symbolic are not held against it.
"""

from __future__ import annotations

import math
from typing import Any

from allbatch import CLASS_NAMES
from allbatch.core.errors import ModelError
from allbatch.model.manifest import ModelArtifact
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.segment import SegmentationParams

RESIZE_MODES = frozenset({"bilinear_antialias"})
"""Resize modes the CPU and GPU preparers implement."""
FLOAT32 = 1
"""``onnx.TensorProto.FLOAT``."""


def _preprocessing(artifact: ModelArtifact) -> Preprocessing:
    where = artifact.onnx_path
    try:
        prep = Preprocessing.from_dict(dict(artifact.manifest.preprocessing))
        SegmentationParams.from_dict(dict(artifact.manifest.segmentation))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"model {where}: unusable preprocessing/segmentation in its manifest ({exc})") from None
    problems = []
    if not isinstance(prep.size, int) or prep.size < 16:
        problems.append(f"size {prep.size!r} (an integer >= 16)")
    if not isinstance(prep.mean, int | float) or not math.isfinite(prep.mean):
        problems.append(f"mean {prep.mean!r} (a finite number)")
    if not isinstance(prep.std, int | float) or not math.isfinite(prep.std) or prep.std <= 0:
        problems.append(f"std {prep.std!r} (a finite number > 0)")
    if not isinstance(prep.blank_bottom_fraction, int | float) or not 0 <= prep.blank_bottom_fraction < 1:
        problems.append(f"blank_bottom_fraction {prep.blank_bottom_fraction!r} (in [0, 1))")
    if prep.resize not in RESIZE_MODES:
        problems.append(f"resize {prep.resize!r} ({', '.join(sorted(RESIZE_MODES))})")
    if problems:
        raise ModelError(f"model {where}: manifest preprocessing allbatch cannot apply: {'; '.join(problems)}")
    return prep


def _dims(value_info: Any) -> list[int | None]:
    """Static dimensions of an ONNX value, None where symbolic or unknown."""
    return [dim.dim_value if dim.HasField("dim_value") else None for dim in value_info.type.tensor_type.shape.dim]


def _matches(dims: list[int | None], expected: list[int | None]) -> bool:
    return len(dims) == len(expected) and all(d is None or e is None or d == e for d, e in zip(dims, expected, strict=True))


def _shape_text(dims: list[int | None]) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in dims) + ")"


def check_model_fits(artifact: ModelArtifact) -> None:
    """Raise ModelError (one line) unless ``artifact`` can be fed and read by allbatch; see the module docstring."""
    import onnx

    manifest, where = artifact.manifest, artifact.onnx_path
    prep = _preprocessing(artifact)
    size = prep.size
    declared = list(manifest.input_shape)
    if len(declared) != 5 or declared[1:] != [2, 3, size, size]:
        raise ModelError(f"model {where}: manifest input_shape {declared} is not [N, 2, 3, {size}, {size}] (preprocessing size {size})")
    try:
        model = onnx.load(str(where), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError, OSError and others for a bad file
        raise ModelError(f"model {where} is not a readable ONNX file ({type(exc).__name__})") from None
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in weights]
    outputs = {value.name: value for value in graph.output}
    if [value.name for value in inputs] != [manifest.input_name]:
        raise ModelError(f"model {where}: graph inputs {[v.name for v in inputs]} differ from the manifest's [{manifest.input_name!r}]")
    missing = [name for name in manifest.output_names if name not in outputs]
    if missing:
        raise ModelError(f"model {where}: graph outputs {list(outputs)} lack the manifest's {missing}")
    (image_input,) = inputs
    expected_in: list[int | None] = [None, 2, 3, size, size]
    if image_input.type.tensor_type.elem_type != FLOAT32 or not _matches(_dims(image_input), expected_in):
        raise ModelError(
            f"model {where}: input {manifest.input_name!r} is {_shape_text(_dims(image_input))}, allbatch feeds float32 "
            f"{_shape_text(expected_in)} (two images of {size} px, as its manifest's preprocessing says)"
        )
    try:
        num_features: int | None = manifest.num_features
    except (KeyError, TypeError):
        num_features = None  # the torch backend reports an architecture that does not build; the runtimes only read the graph
    widths: dict[str, tuple[int | None, str]] = {
        "probs": (len(CLASS_NAMES), f"one probability per class: {', '.join(CLASS_NAMES)}"),
        "logits": (len(CLASS_NAMES), "one logit per class"),
        "features": (num_features, "the pooled features of both channels"),
    }
    for name in manifest.output_names:
        output = outputs[name]
        width, meaning = widths[name]
        expected_out: list[int | None] = [None, width]
        if output.type.tensor_type.elem_type != FLOAT32 or not _matches(_dims(output), expected_out):
            raise ModelError(
                f"model {where}: output {name!r} is {_shape_text(_dims(output))}, allbatch reads float32 "
                f"{_shape_text(expected_out)} ({meaning})"
            )
