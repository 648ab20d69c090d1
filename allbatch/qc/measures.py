"""Per-image quality measures as array functions: the same code runs on NumPy (CPU path) and CuPy (GPU
path, on the device the batch already lives on); ``xp`` is the array module of the inputs.

Input measures are taken from the model input itself (the (N, 2, 3, S, S) batch after decode, band
blanking, segmentation and resize), so they describe exactly what the network saw, at a fixed size S.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.segment import opencv

LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 weights: grey level for the blur measure."""
MASK_LEVEL = 0.5
"""A segmented pixel counts as foreground when any channel is above this (0..255 scale): masked pixels are 0."""
STAIN_CHROMA = 40.0
"""Chroma (max - min channel, 0..255 scale) above which a pixel counts as stained for the stain hue. The pale
background and red cells lie below it (their tint, e.g. the yellowish background of some Pro captures, would
otherwise pull the mean hue of a pale smear): on the 2,060 training images the hue's p0.1 and p99.9 move by
under 5 degrees between thresholds 35 and 60, while at 25 the yellowish background of six Pro re-captures pulls
their hue from about 290 up to 340 degrees, and p99.9 from 285 to 328."""


def array_module(array: Any) -> ModuleType:
    """NumPy or CuPy, whichever ``array`` belongs to (CuPy only imported when the array is a CuPy array)."""
    if type(array).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def _ndimage(xp: ModuleType) -> Any:
    """scipy.ndimage or cupyx.scipy.ndimage, matching ``xp``."""
    if xp is np:
        from scipy import ndimage

        return ndimage
    from cupyx.scipy import ndimage as cupy_ndimage

    return cupy_ndimage


def unblanked_rows(prep: Preprocessing) -> int:
    """Rows of the S x S input above the blanked bottom band: the measures ignore the band, whose sharp
    edge would otherwise dominate the blur measure of every image."""
    return max(3, prep.size - prep.blank_rows(prep.size))


def input_measures(inputs: Any, prep: Preprocessing) -> dict[str, Any]:
    """Blur, colour and segmentation components of a batch, on the batch's device.

    Args:
        inputs: (N, 2, 3, S, S) model input; channel 0 the original, channel 1 the segmented image.
        prep: the model's preprocessing (normalisation, blanked band).
    Returns:
        blur: (N,) float32, variance of the 4-neighbour Laplacian of the grey original (0..255 scale)
            over the rows above the blanked band; small means blurred or flat.
        colour: (N, 4) float32, mean R, G, B (0..255) and mean chroma (max - min channel) of the original
            above the band; a wrong stain or a grey picture moves them out of the training range.
        components: (N,) int32, 8-connected foreground regions of the segmented image at S x S.
        stain_hue: (N,) float32, hue in degrees [0, 360) (0 red, 120 green, 240 blue) of the stained pixels of
            the original above the band: the angle of the chroma-weighted mean of their hue vectors, each pixel
            weighted by how far its chroma exceeds ``STAIN_CHROMA``; NaN when no pixel does (grey, pale).
            The mean colour above is dominated by the pale background, so a smear whose stain has another hue
            (a hue rotation, another dye) can keep its mean colour in range; the stain's own hue cannot.
    """
    xp = array_module(inputs)
    rows = unblanked_rows(prep)
    # Everything is computed on the normalised values x = (p / 255 - mean) / std and mapped back to the 0..255
    # pixel scale p = scale * x + offset at the end (the map is affine and increasing): no denormalised copy of
    # the batch is made. The input was made from 8-bit pixels, so nothing lies outside 0..255 to clip.
    scale, offset = xp.float32(255.0 * prep.std), xp.float32(255.0 * prep.mean)
    original = inputs[:, 0, :, :rows, :].astype(xp.float32, copy=False)  # (N, 3, R, S): only what the measures read
    grey = original[:, 0] * xp.float32(LUMA[0]) + original[:, 1] * xp.float32(LUMA[1]) + original[:, 2] * xp.float32(LUMA[2])
    # the weights sum to 1, so the grey of the pixels is scale * grey + offset, and the Laplacian drops the offset
    laplacian = grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1] + grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:] - xp.float32(4.0) * grey[:, 1:-1, 1:-1]
    blur = laplacian.reshape(len(inputs), -1).var(axis=1) * (scale * scale)
    means = original.mean(axis=(2, 3)) * scale + offset
    highest = xp.maximum(xp.maximum(original[:, 0], original[:, 1]), original[:, 2])
    lowest = xp.minimum(xp.minimum(original[:, 0], original[:, 1]), original[:, 2])
    spread = highest - lowest  # (N, R, S) per-pixel chroma / scale
    chroma = spread.mean(axis=(1, 2)) * scale
    colour = xp.concatenate([means, chroma[:, None]], axis=1)
    stain_hue = _stain_hue(original, spread, xp.float32(STAIN_CHROMA) / scale, xp)
    foreground = inputs[:, 1].max(axis=1) > xp.float32((MASK_LEVEL / 255.0 - prep.mean) / prep.std)  # (N, S, S)
    return {
        "blur": blur.astype(xp.float32),
        "colour": colour.astype(xp.float32),
        "components": count_components(foreground),
        "stain_hue": stain_hue,
    }


def _stain_hue(original: Any, spread: Any, threshold: Any, xp: ModuleType) -> Any:
    """(N, 3, R, S) normalised original, its (N, R, S) chroma and the chroma threshold (normalised units)
    -> (N,) float32 hue in degrees [0, 360) of the stained pixels, NaN when none (see ``input_measures``).

    Each pixel's hue vector is its chroma-plane coordinates a = R - (G + B) / 2, b = sqrt(3) / 2 (G - B),
    whose angle is the HSV hue at the primaries and secondaries (red 0, yellow 60, blue 240) and whose length
    is close to its chroma. The offset of the normalisation cancels in both (their weights sum to 0) and the
    scale does not change an angle, so the normalised values are used as they are. A circular mean, not a
    mean of hue angles: an angle wraps at 0/360, a sum of vectors does not. The angle is reported in
    [0, 360): the training stain (blue-violet, about 215..285 degrees) lies far from the wrap at red, so a
    two-sided percentile rule flags the whole arc outside the training range on either side of it.
    """
    weight = xp.maximum(spread - threshold, xp.float32(0.0))  # (N, R, S): 0 for unstained pixels
    red_axis = original[:, 0] - xp.float32(0.5) * (original[:, 1] + original[:, 2])
    green_blue_axis = original[:, 1] - original[:, 2]  # times sqrt(3) / 2 below, after the sum
    x = (weight * red_axis).sum(axis=(1, 2))
    y = (weight * green_blue_axis).sum(axis=(1, 2)) * xp.float32(np.sqrt(3.0) / 2.0)
    hue = xp.mod(xp.degrees(xp.arctan2(y, x)), xp.float32(360.0))
    hue = xp.where(hue >= xp.float32(360.0), hue - xp.float32(360.0), hue)  # float32 rounds -1e-6 mod 360 up to 360
    stained = weight.sum(axis=(1, 2)) > 0
    return xp.where(stained, hue, xp.float32(np.nan)).astype(xp.float32)


def count_components(masks: Any) -> Any:
    """(N, H, W) bool -> (N,) int32 number of 8-connected foreground regions of each mask.

    On the host with OpenCV installed: ``cv2.connectedComponents`` per image. Otherwise (SciPy, or CuPy on
    the device) one labelling call for the whole batch with a structure that connects pixels within an image only;
    each label is then attributed to its image by scattering the image index, which does not rely on
    the order in which the library numbers the labels.
    """
    xp = array_module(masks)
    n = masks.shape[0]
    if n == 0:
        return xp.zeros(0, dtype=xp.int32)
    cv2 = opencv() if xp is np else None
    if cv2 is not None:  # OpenCV's labelling is about 10x faster than scipy's on the host; the counts are the same
        return np.array([cv2.connectedComponents(mask.view(np.uint8), connectivity=8)[0] - 1 for mask in masks], dtype=np.int32)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connectivity in (H, W), none along N
    labels, count = _ndimage(xp).label(masks, structure=xp.asarray(structure))
    count = int(count)
    if count == 0:
        return xp.zeros(n, dtype=xp.int32)
    image_of_label = xp.zeros(count + 1, dtype=xp.int64)
    where = xp.nonzero(labels)  # foreground pixels only (a few % of them); where[0] is each one's image
    image_of_label[labels[where]] = where[0]
    return xp.bincount(image_of_label[1:], minlength=n).astype(xp.int32)


def confidence_measures(logits: Any) -> dict[str, Any]:
    """Confidence from (N, C) float32 logits (already divided by the model's temperature).

    Returns (N,) float32 each: ``max_prob`` (largest softmax probability), ``margin`` (largest minus
    second largest probability), ``entropy`` (nats, 0 .. log C) and ``energy`` (-logsumexp(logits);
    higher means less familiar, Liu et al. 2020).
    """
    xp = array_module(logits)
    z = logits.astype(xp.float32)
    top = z.max(axis=1, keepdims=True)
    shifted = z - top
    exp = xp.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    probs = exp / total
    log_probs = shifted - xp.log(total)
    ordered = xp.sort(probs, axis=1)
    margin = ordered[:, -1] - ordered[:, -2] if z.shape[1] > 1 else ordered[:, -1]
    return {
        "max_prob": ordered[:, -1].astype(xp.float32),
        "margin": margin.astype(xp.float32),
        "entropy": (-(probs * log_probs).sum(axis=1)).astype(xp.float32),
        "energy": (-(top[:, 0] + xp.log(total[:, 0]))).astype(xp.float32),
    }


def l2_normalise(features: Any) -> Any:
    """(N, F) -> (N, F) float32 rows of unit length (a zero row stays zero)."""
    xp = array_module(features)
    f = features.astype(xp.float32)
    norm = xp.sqrt((f * f).sum(axis=1, keepdims=True))
    return f / xp.maximum(norm, xp.float32(1e-12))


def mahalanobis_distance(features: Any, class_means: Any, basis: Any, variances: Any, residual_variance: float) -> Any:
    """Distance of each image to the nearest class in l2-normalised feature space.

    The shared within-class covariance is modelled as probabilistic PCA (Tipping and Bishop 1999): the
    K leading directions ``basis`` with their ``variances``, and one ``residual_variance`` for every
    other direction. With 2,060 training images in 3,840 dimensions the full covariance is singular
    anyway, and this form needs K x F numbers instead of F x F.

    Args:
        features: (N, F) raw pooled features (any float dtype).
        class_means: (C, F) float32 means of the l2-normalised training features per class.
        basis: (K, F) float32 orthonormal rows. variances: (K,) float32 > 0.
        residual_variance: variance per dimension outside the basis (> 0).
    Returns:
        (N,) float32 sqrt(min over classes of the squared Mahalanobis distance).
    """
    xp = array_module(features)
    z = l2_normalise(features)
    diff = z[:, None, :] - class_means[None, :, :]  # (N, C, F)
    projected = diff @ basis.T  # (N, C, K)
    inside = (projected * projected / variances).sum(axis=2)
    outside = xp.maximum((diff * diff).sum(axis=2) - (projected * projected).sum(axis=2), 0.0) / xp.float32(residual_variance)
    return xp.sqrt((inside + outside).min(axis=1)).astype(xp.float32)


def scalar_measures(measures: dict[str, Any], mask_fraction: Any, sizes: Any, distance: Any | None = None) -> dict[str, Any]:
    """The per-image scalars rules test, from what ``input_measures``/``confidence_measures`` return.

    Args:
        measures: blur (N,), colour (N, 4), components (N,), stain_hue (N,), max_prob, margin, entropy, energy (N,).
        mask_fraction: (N,) float32. sizes: (N, 2) (height, width), 0 when unknown.
        distance: (N,) Mahalanobis distance, or None when the model has no feature statistics.
    Returns:
        name -> (N,) array for each name of ``SCALAR_MEASURES`` that can be computed (same array module).
    """
    colour = measures["colour"]
    out = {
        "blur": measures["blur"],
        "colour_r": colour[:, 0],
        "colour_g": colour[:, 1],
        "colour_b": colour[:, 2],
        "chroma": colour[:, 3],
        # hue of the stain: smears are blue-violet on a pale background (G the lowest channel, R close to it);
        # a wrong stain or a hue shift moves these differences first
        "red_minus_green": colour[:, 0] - colour[:, 1],
        "blue_minus_green": colour[:, 2] - colour[:, 1],
        "mask_fraction": mask_fraction,
        "components": measures["components"],
        "min_side": sizes.min(axis=1),
        **{name: measures[name] for name in ("max_prob", "margin", "entropy", "energy")},
    }
    if "stain_hue" in measures:  # the hue of the stained pixels alone (the mean colour is mostly background)
        out["stain_hue"] = measures["stain_hue"]  # absent from outputs collected before it existed (old caches)
    if distance is not None:
        out["distance"] = distance
    return out
