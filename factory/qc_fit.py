"""Fit the manifest's ``qc`` statistics on the training part of a model's data (see stats.py for the format).

Everything is computed from the training images only; the validation part (listed in the manifest,
``training.val_files``) is what the flag rates are measured on. factory/scripts/fit_qc_stats.py is the command.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from allbatch.qc.measures import l2_normalise, mahalanobis_distance, scalar_measures
from allbatch.qc.stats import PERCENTILES, QC_FORMAT, SCALAR_MEASURES, encode_array, percentile_key
from factory.qc_collect import Collected

DEFAULT_COMPONENTS = 64
"""PCA directions kept for the within-class covariance (the rest share one variance)."""

DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {"flag": "small", "measure": "min_side", "below": "p0.1", "scale": 0.5},
    {"flag": "blurred", "measure": "blur", "below": "p0.1", "scale": 0.75},
    {"flag": "colour", "measure": "colour_r", "below": "p0.1", "scale": 0.9},
    {"flag": "colour", "measure": "colour_r", "above": "p99.9", "scale": 1.05},
    {"flag": "colour", "measure": "colour_g", "below": "p0.1", "scale": 0.9},
    {"flag": "colour", "measure": "colour_g", "above": "p99.9", "scale": 1.05},
    {"flag": "colour", "measure": "colour_b", "below": "p0.1", "scale": 0.9},
    {"flag": "colour", "measure": "colour_b", "above": "p99.9", "scale": 1.05},
    {"flag": "colour", "measure": "chroma", "below": "p0.1", "scale": 0.8},
    {"flag": "colour", "measure": "chroma", "above": "p99.9", "scale": 1.25},
    {"flag": "colour", "measure": "red_minus_green", "below": "p0.1", "offset": -5.0},
    {"flag": "colour", "measure": "red_minus_green", "above": "p99.9", "offset": 5.0},
    {"flag": "colour", "measure": "blue_minus_green", "below": "p0.1", "offset": -10.0},
    {"flag": "colour", "measure": "blue_minus_green", "above": "p99.9", "offset": 10.0},
    {"flag": "colour", "measure": "stain_hue", "below": "p0.1", "offset": -10.0},
    {"flag": "colour", "measure": "stain_hue", "above": "p99.9", "offset": 10.0},
    {"flag": "segmentation", "measure": "mask_fraction", "below": "p0.1", "scale": 0.5},
    {"flag": "segmentation", "measure": "mask_fraction", "above": "p99.9", "scale": 1.5},
    {"flag": "components", "measure": "components", "below": "p0.1", "scale": 0.5},
    {"flag": "components", "measure": "components", "above": "p99.9", "scale": 1.5},
    {"flag": "outlier", "measure": "distance", "above": "p99.9", "scale": 1.0},
    {"flag": "energy", "measure": "energy", "above": "p99.9", "scale": 1.0},
    {"flag": "uncertain", "measure": "max_prob", "below": "p1", "scale": 1.1},
)
"""Which side of which training percentile fires which flag. Scales (and offsets, for differences around
zero) widen a range where the training images are homogeneous (one camera, one stain) so that ordinary
variation between labs is not flagged. A segmented fraction or region count of 0 falls below half the
training p0.1 (no blast-coloured pixel: no blast in the field, or a wrong stain). The stain hue (degrees) is
widened by 10 degrees (5 OpenCV hue units) on each side, more than the +-3 units of the robustness suite (a
lab's stain or white balance) and far less than the 90 degrees of a wrong stain (tests/ood_factory.py);
its training p0.1 .. p99.9 span about 70 degrees (217 .. 285)."""


def fit_feature_stats(
    features: npt.NDArray[np.float32], labels: npt.NDArray[np.integer[Any]], num_classes: int, k: int = DEFAULT_COMPONENTS
) -> dict[str, Any]:
    """Class means and a probabilistic-PCA within-class covariance of l2-normalised features.

    Args:
        features: (N, F) float32 training features. labels: (N,) class indices in [0, num_classes).
    Returns:
        class_means (C, F) float32, basis (K, F) float32 orthonormal, variances (K,) float32 and
        residual_variance (float), unencoded.
    """
    z = l2_normalise(features).astype(np.float64)
    means = np.stack([z[labels == c].mean(axis=0) for c in range(num_classes)])
    residuals = z - means[labels]
    dof = max(1, len(z) - num_classes)
    _, singular, vt = np.linalg.svd(residuals, full_matrices=False)
    eigen = singular**2 / dof
    k = min(k, len(eigen) - 1)
    total = float((residuals**2).sum() / dof)
    residual_variance = max((total - float(eigen[:k].sum())) / (z.shape[1] - k), 1e-12)
    return {
        "class_means": means.astype(np.float32),
        "basis": vt[:k].astype(np.float32),
        "variances": eigen[:k].astype(np.float32),
        "residual_variance": residual_variance,
    }


def out_of_fold_distances(
    features: npt.NDArray[np.float32],
    labels: npt.NDArray[np.integer[Any]],
    names: list[str],
    num_classes: int,
    k: int = DEFAULT_COMPONENTS,
    folds: int = 5,
    block: int = 25,
) -> npt.NDArray[np.float32]:
    """(N,) distance of each training image to statistics fitted without its fold.

    In-sample distances are optimistic (the image helped place the means and directions), so their
    percentiles would flag far too many new images. Folds are blocks of ``block`` consecutive images in
    name order, so that near-duplicate re-captures (neighbouring numbers) stay in one fold.
    """
    block = max(1, min(block, len(names) // (2 * folds)))  # small sets (tests): still several blocks per fold
    order = np.argsort(np.array(names, dtype=object), kind="stable")
    fold_of = np.empty(len(names), dtype=np.int64)
    fold_of[order] = (np.arange(len(names)) // block) % folds
    out = np.full(len(names), np.nan, dtype=np.float32)
    for fold in range(folds):
        held = fold_of == fold
        if not held.any() or len(np.unique(labels[~held])) < num_classes:
            continue
        stats = fit_feature_stats(features[~held], labels[~held], num_classes, k)
        basis16 = stats["basis"].astype(np.float16).astype(np.float32)
        out[held] = mahalanobis_distance(features[held], stats["class_means"], basis16, stats["variances"], stats["residual_variance"])
    if np.isnan(out).all():
        raise ValueError(f"{len(names)} training images are too few for out-of-fold feature statistics")
    return out


def fit_qc(
    collected: Collected,
    labels: npt.NDArray[np.integer[Any]],
    num_classes: int,
    fitted_on: dict[str, Any],
    rules: tuple[dict[str, Any], ...] = DEFAULT_RULES,
    k: int = DEFAULT_COMPONENTS,
) -> dict[str, Any]:
    """The manifest ``qc`` field from the training images' outputs (``collected``) and true ``labels``."""
    stats = fit_feature_stats(collected.features, labels, num_classes, k)
    distance = out_of_fold_distances(collected.features, labels, collected.names, num_classes, k)
    scalars = scalar_measures(collected.measures, collected.mask_fraction, collected.sizes, distance)
    missing = [name for name in SCALAR_MEASURES if name not in scalars]
    if missing:
        raise ValueError(f"the collected outputs lack the measures {missing} (a cache written by an older allbatch? collect again)")
    percentiles = {
        name: {
            percentile_key(q): float(v)
            for q, v in zip(PERCENTILES, np.nanpercentile(np.asarray(scalars[name], np.float64), PERCENTILES), strict=True)
        }
        for name in SCALAR_MEASURES
    }
    return {
        "format": QC_FORMAT,
        "fitted_on": {
            **fitted_on,
            "n": len(labels),
            "pca_components": int(stats["basis"].shape[0]),
            "distance_percentiles": "out of fold (5 folds of 25-image blocks)",
        },
        "percentiles": percentiles,
        "rules": [dict(rule) for rule in rules],
        "features": {
            "class_means": encode_array(stats["class_means"], "float32"),
            "basis": encode_array(stats["basis"], "float16"),
            "variances": encode_array(stats["variances"], "float32"),
            "residual_variance": stats["residual_variance"],
        },
    }
