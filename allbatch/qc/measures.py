"""Per-image quality measures as array functions: the same code runs on NumPy (CPU path) and CuPy (GPU
path, on the device the batch already lives on); ``xp`` is the array module of the inputs.

Input measures are taken from the model input itself (the (N, 2, 3, S, S) batch after decode, band
blanking, segmentation and resize), so they describe exactly what the network saw, at a fixed size S.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from allbatch.preprocess import Preprocessing
from allbatch.segment import opencv

LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 weights: grey level for the blur measure."""
MASK_LEVEL = 0.5
"""A segmented pixel counts as foreground when any channel is above this (0..255 scale): masked pixels are 0."""


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
    chroma = (highest - lowest).mean(axis=(1, 2)) * scale
    colour = xp.concatenate([means, chroma[:, None]], axis=1)
    foreground = inputs[:, 1].max(axis=1) > xp.float32((MASK_LEVEL / 255.0 - prep.mean) / prep.std)  # (N, S, S)
    return {
        "blur": blur.astype(xp.float32),
        "colour": colour.astype(xp.float32),
        "components": count_components(foreground),
    }


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
