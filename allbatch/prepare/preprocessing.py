"""Resize and normalise: from decoded + segmented images to the model's two-channel input (NumPy, CPU)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image


@dataclass(frozen=True)
class Preprocessing:
    """How images become model input; stored in the model manifest and in every results file.

    ``size``: model input side (pixels); both images are resized to size x size after segmentation.
    ``mean``/``std``: input = (pixel / 255 - mean) / std, the same scalars on every channel.
    ``resize``: the interpolation (Pillow's antialiased bilinear on the CPU path).
    ``blank_bottom_fraction``: the bottom round(H * fraction) rows of the original are set to 0 before
    segmentation. The development originals carry a class-dependent scale-bar label in their bottom band
    (48 of 224 rows); a model trained with the band always blanked cannot use it.
    """

    size: int = 224
    mean: float = 0.5
    std: float = 0.25
    resize: str = "bilinear_antialias"
    blank_bottom_fraction: float = 0.0

    def blank_rows(self, height: int) -> int:
        """Rows blanked at the bottom of an image of ``height`` rows."""
        return min(height, round(height * self.blank_bottom_fraction))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(**data)


def blank_bottom_band(image: npt.NDArray[np.uint8], prep: Preprocessing) -> npt.NDArray[np.uint8]:
    """(H, W, 3) uint8 -> the same with the bottom ``prep.blank_rows(H)`` rows set to 0 (a copy if any)."""
    rows = prep.blank_rows(image.shape[0])
    if rows == 0:
        return image
    out = image.copy()
    out[image.shape[0] - rows :] = 0
    return out


def resize_rgb(image: npt.NDArray[np.uint8], size: int) -> npt.NDArray[np.uint8]:
    """(H, W, 3) uint8 -> (size, size, 3) uint8; returned as is when already that size."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)
