"""Is what a model returned a result? The one check of every inference output, for every executor.

A model (or a reduced-precision engine of it) can return numbers that are not results: NaN everywhere (a
broken export), "probabilities" that are not probabilities (a graph whose ``probs`` output is not a softmax:
``[-5, 10, 3, 2]`` would be stored with confidence 10), or an fp16 overflow on some images (inf, then NaN
through the softmax). Without a check every such image is stored as "ok" with the argmax of garbage.

Two uses, both here:

- ``output_faults`` (per chunk, mid-run): the reason each row of an ``InferenceOutput`` is not a result, ""
  for a valid row. The engine and Ray's actors store a faulty row with status ``MODEL_OUTPUT_ERROR`` and that
  reason (``mark_output_faults``), never as "ok"; a wrong output *shape* is a fault of the model, not of an
  image: ``check_output_shapes`` raises ModelError.
- ``check_model_outputs`` (start-up): the backend, once loaded, runs the images shipped with allbatch; a
  model whose outputs fail there is refused with one line before any results file exists.

Valid row (all float32, host):
- ``probs`` (C,): finite, each in [0, 1] (within ``PROB_RANGE_SLACK``), summing to 1 within ``PROB_SUM_TOLERANCE``;
- ``logits`` (C,) and ``features`` (F,): finite.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from allbatch.backends.base import InferenceOutput
from allbatch.core.errors import ModelError

if TYPE_CHECKING:
    from allbatch.backends.base import Backend
    from allbatch.model.manifest import ModelArtifact

PROB_SUM_TOLERANCE = 0.01
"""|sum(probs) - 1| allowed. A softmax computed in fp16 rounds each probability to 11 significant bits and in
bf16 to 8 (relative error 2^-9 = 0.002 each, and the normalising sum's own rounding scales them all), so four
probabilities sum to 1 within a few thousandths; 0.01 is above that and far below any real fault (a NaN, a
missing softmax, an overflow)."""
PROB_RANGE_SLACK = 1e-3
"""How far a probability may lie outside [0, 1] by rounding alone (a softmax's division in reduced precision)."""
STARTUP_CHECK_IMAGES = Path(__file__).resolve().parent.parent / "demo"
"""The eight real images shipped with allbatch (2 per class): what the start-up check runs."""
STARTUP_CHECK_LIMIT = 4
"""Images of ``STARTUP_CHECK_IMAGES`` the start-up check runs (spread over the four class folders): one
inference call of four images, which the first chunk of a run (``engine.FIRST_CHUNK``) has anyway."""


def check_output_shapes(output: InferenceOutput, num_classes: int, num_features: int, where: str) -> None:
    """Raise ModelError (one line) unless ``output`` has ``num_classes`` probabilities and logits and
    ``num_features`` features per row: a graph whose declared widths are symbolic can return any width."""
    if output.probs.shape[1:] != (num_classes,) or output.features.shape[1:] != (num_features,):
        raise ModelError(
            f"model {where} returned probs/logits of shape {output.probs.shape} and features of shape {output.features.shape}; "
            f"allbatch reads ({len(output)}, {num_classes}) and ({len(output)}, {num_features}) (its manifest's classes and features)"
        )


def _all_in_row(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """(N,) bool: the rows of an (N, K) mask that are all True."""
    return np.asarray(mask.all(axis=1), dtype=np.bool_)


def output_faults(output: InferenceOutput) -> list[str]:
    """One entry per row of ``output``: "" when the row is a valid result (module docstring), else the first
    reason it is not, one line, e.g. "model output is not a probability: probs sum to 14 (not 1 within 0.01)"."""
    probs = output.probs.astype(np.float64)
    finite_probs = _all_in_row(np.isfinite(probs))
    finite_logits = _all_in_row(np.isfinite(output.logits))
    finite_features = _all_in_row(np.isfinite(output.features))
    with np.errstate(invalid="ignore"):
        sums: npt.NDArray[np.float64] = probs.sum(axis=1)
        in_range = _all_in_row((probs >= -PROB_RANGE_SLACK) & (probs <= 1 + PROB_RANGE_SLACK))
        sums_to_one = np.asarray(np.abs(sums - 1.0) <= PROB_SUM_TOLERANCE, dtype=np.bool_)
    valid = finite_probs & finite_logits & finite_features & in_range & sums_to_one
    reasons = [""] * len(output)
    for i in np.flatnonzero(~valid).tolist():
        if not finite_probs[i]:
            why = "probabilities are not finite (NaN or inf: a broken model or a reduced-precision overflow)"
        elif not in_range[i]:
            why = f"probabilities outside [0, 1] (min {probs[i].min():.4g}, max {probs[i].max():.4g})"
        elif not sums_to_one[i]:
            why = f"probabilities sum to {sums[i]:.4g}, not 1 within {PROB_SUM_TOLERANCE}"
        elif not finite_logits[i]:
            why = "logits are not finite (NaN or inf: a reduced-precision overflow)"
        else:
            why = "features are not finite (NaN or inf: a reduced-precision overflow)"
        reasons[i] = f"invalid model output: {why}"
    return reasons


def check_model_outputs(backend: Backend, artifact: ModelArtifact, images: Path = STARTUP_CHECK_IMAGES) -> None:
    """The start-up check: run ``backend`` (entered) on ``STARTUP_CHECK_LIMIT`` of ``images`` (prepared on the
    CPU as the manifest says, handed over as a host array) and raise ModelError, one line, when the outputs
    have the wrong shape or any row fails ``output_faults``. Run before the results file is opened."""
    from allbatch.backends.fp16_check import check_inputs_from_folder

    inputs = check_inputs_from_folder(images, artifact, limit=STARTUP_CHECK_LIMIT)
    output = backend.infer(inputs)
    manifest = artifact.manifest
    check_output_shapes(output, len(manifest.class_names), manifest.num_features, str(artifact.onnx_path))
    faults = [reason for reason in output_faults(output) if reason]
    if faults:
        raise ModelError(
            f"model {artifact.onnx_path} on {backend.name} ({backend.device}) fails on {len(faults)} of {len(output)} of the images "
            f"shipped with allbatch: {faults[0]}; nothing written"
        )
