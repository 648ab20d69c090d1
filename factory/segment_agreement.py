"""Agreement of allbatch's masks with the authors' ``Segmented/`` images (a regression figure).

Their JPEGs hold masked (V, S, H); their foreground is read as channel sum > 150 (JPEG ringing adds a
halo below that). Perfect agreement is not reachable: they segmented at another resolution before
resizing and wrote lossy JPEGs. Expect a median IoU around 0.8 overall and ~0.4 for Pro, whose
reference masks are tiny and mostly red-cell rims.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from allbatch import CLASS_NAMES
from allbatch.input.decode import decode_rgb
from allbatch.prepare.segment import SegmentationParams, authors_mask, mask_iou, segment


@dataclass(frozen=True)
class ClassAgreement:
    """IoU statistics of one class folder."""

    name: str
    n: int
    median: float
    p10: float


def iou_per_image(original: Path, segmented: Path, params: SegmentationParams) -> float:
    ours = segment(decode_rgb(original.read_bytes()), params)[1]
    theirs = authors_mask(decode_rgb(segmented.read_bytes()))
    if ours.shape != theirs.shape:
        raise ValueError(f"{original.name}: shapes {ours.shape} and {theirs.shape} differ")
    return mask_iou(ours, theirs)


def agreement(dataset_root: Path, params: SegmentationParams | None = None) -> tuple[list[ClassAgreement], ClassAgreement]:
    """Per-class and overall IoU (median, 10th percentile) over ``<root>/Original`` vs ``<root>/Segmented``."""
    params = params or SegmentationParams()
    per_class = []
    everything: list[float] = []
    for name in CLASS_NAMES:
        values = [
            iou_per_image(path, dataset_root / "Segmented" / name / path.name, params)
            for path in sorted((dataset_root / "Original" / name).glob("*.jpg"))
        ]
        everything.extend(values)
        per_class.append(_summarise(name, values))
    return per_class, _summarise("all", everything)


def _summarise(name: str, values: list[float]) -> ClassAgreement:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return ClassAgreement(name, 0, float("nan"), float("nan"))
    return ClassAgreement(name, int(array.size), float(np.median(array)), float(np.percentile(array, 10)))
