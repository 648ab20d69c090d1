"""FP16 acceptance: an fp16 engine becomes the default only when it agrees with the fp32 reference on real images.

The comparison is pure NumPy (``fp16_agreement``, ``judge_fp16``) so it is tested without TensorRT. The
reference is the model run in fp32 by ONNX Runtime on the CPU (``reference_probs``): the project's portable
reference, independent of TensorRT, so the check measures everything the fp16 engine changes (reduced
precision, TensorRT's fusions and kernels), not only the precision flag.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from allbatch.core.errors import UserInputError
from allbatch.model.manifest import ModelArtifact

log = logging.getLogger("allbatch.backends")

FP16_MIN_ARGMAX_AGREEMENT = 0.995
"""Share of images whose fp16 class must equal the fp32 class. At most 1 flip in 200 images; with fewer than
200 check images every class must agree."""
FP16_MAX_ABS_PROB_DIFF = 0.02
"""Largest absolute difference allowed between any fp16 and fp32 probability (two points on a 0..1 scale):
enough for fp16 rounding in a 200-layer network, far below a change that would alter a report."""
DEFAULT_CHECK_IMAGES = Path(__file__).resolve().parent.parent / "demo"
"""The eight real development images shipped with allbatch (2 per class); ``--check-images`` gives more."""
DEFAULT_CHECK_LIMIT = 256
"""At most this many check images, spread evenly over the folder (classes are sorted into sub-folders)."""


def fp16_agreement(fp16_probs: npt.ArrayLike, fp32_probs: npt.ArrayLike) -> dict[str, Any]:
    """Compare (N, C) probabilities of the same N images from the fp16 engine and the fp32 reference.

    Returns:
        {"argmax_agreement": share of rows with the same argmax (float in [0, 1]),
         "max_abs_prob_diff": largest |fp16 - fp32| (float; inf when fp16 has a NaN or inf),
         "n": N (int)}.

    Raises:
        ValueError: shapes differ, are not 2-D, or N is 0.
    """
    low = np.asarray(fp16_probs, dtype=np.float64)
    ref = np.asarray(fp32_probs, dtype=np.float64)
    if low.ndim != 2 or low.shape != ref.shape:
        raise ValueError(f"fp16_agreement needs two (N, C) arrays of the same shape, got {low.shape} and {ref.shape}")
    if low.shape[0] == 0:
        raise ValueError("fp16_agreement needs at least one image")
    finite = bool(np.isfinite(low).all())
    agreement = float(np.mean(low.argmax(axis=1) == ref.argmax(axis=1))) if finite else 0.0
    max_diff = float(np.abs(low - ref).max()) if finite else float("inf")
    return {"argmax_agreement": agreement, "max_abs_prob_diff": max_diff, "n": int(low.shape[0])}


def judge_fp16(figures: dict[str, Any]) -> tuple[bool, str]:
    """(accepted?, one-line reason) for figures from ``fp16_agreement`` against the documented thresholds."""
    agreement = float(figures["argmax_agreement"])
    diff = float(figures["max_abs_prob_diff"])
    stated = (
        f"argmax agreement {agreement:.4f} (>= {FP16_MIN_ARGMAX_AGREEMENT} needed), "
        f"max |p16 - p32| {diff:.4g} (<= {FP16_MAX_ABS_PROB_DIFF} allowed) on {figures['n']} images"
    )
    accepted = agreement >= FP16_MIN_ARGMAX_AGREEMENT and diff <= FP16_MAX_ABS_PROB_DIFF  # a NaN compares False: refused
    return accepted, stated


def check_inputs_from_folder(folder: Path, artifact: ModelArtifact, limit: int = DEFAULT_CHECK_LIMIT) -> npt.NDArray[np.float32]:
    """Up to ``limit`` images under ``folder`` (spread evenly over the sorted list), prepared on the CPU as the
    manifest says: a (N, 2, 3, S, S) float32 host array.

    Raises:
        UserInputError: the folder is missing or holds no decodable image.
    """
    from allbatch.input.decode import DecodeFailure
    from allbatch.input.discover import discover
    from allbatch.prepare.cpu import prepare_one

    if not folder.is_dir():
        raise UserInputError(f"check image folder not found: {folder}")
    files = [item for item in discover(folder) if item.problem is None]
    if limit < len(files):
        picks = np.linspace(0, len(files) - 1, num=limit).round().astype(int)
        files = [files[i] for i in picks]
    manifest = artifact.manifest
    pairs = []
    for item in files:
        try:
            pair, _ = prepare_one(item.path.read_bytes(), manifest.prep, manifest.seg)
        except (DecodeFailure, OSError) as exc:
            log.warning("fp16 check: %s skipped: %s", item.relpath, exc)
            continue
        pairs.append(pair)
    if not pairs:
        raise UserInputError(f"no decodable image under {folder} for the fp16 agreement check")
    return np.stack(pairs)


def reference_probs(artifact: ModelArtifact, inputs: npt.NDArray[np.float32], batch_size: int = 16) -> npt.NDArray[np.float32]:
    """(N, C) float32 fp32 probabilities of ``inputs`` ((N, 2, 3, S, S) float32, host) from ONNX Runtime on the CPU."""
    from allbatch.backends.ort_backend import OnnxRuntimeBackend

    with OnnxRuntimeBackend(artifact) as backend:
        parts = [backend.infer(inputs[start : start + batch_size]).probs for start in range(0, len(inputs), batch_size)]
    return np.concatenate(parts)
