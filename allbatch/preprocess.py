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
    """

    size: int = 224
    mean: float = 0.5
    std: float = 0.25
    resize: str = "bilinear_antialias"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(**data)


def resize_rgb(image: npt.NDArray[np.uint8], size: int) -> npt.NDArray[np.uint8]:
    """(H, W, 3) uint8 -> (size, size, 3) uint8; returned as is when already that size."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def normalise_pair(
    original: npt.NDArray[np.uint8], segmented: npt.NDArray[np.uint8], prep: Preprocessing
) -> npt.NDArray[np.float32]:
    """Two (S, S, 3) uint8 images -> one (2, 3, S, S) float32 model input (original first)."""
    pair = np.stack([original, segmented]).astype(np.float32)  # (2, S, S, 3)
    pair = (pair * np.float32(1.0 / 255.0) - np.float32(prep.mean)) * np.float32(1.0 / prep.std)
    return np.ascontiguousarray(pair.transpose(0, 3, 1, 2))
