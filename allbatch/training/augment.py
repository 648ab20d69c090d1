"""Stain-respecting augmentation of (H, W, 3) uint8 RGB smear crops, applied before segmentation.

Flips, 90-degree rotations, mild scale, small per-channel stain gains, brightness/contrast/saturation
jitter, and random blanking of the bottom band (the originals carry a class-dependent scale-bar label
there that a model must not use).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image


@dataclass(frozen=True)
class AugmentConfig:
    scale_min: float = 0.85
    channel_gain: float = 0.08  # per-channel multiplicative stain jitter, +- this fraction
    brightness: float = 0.10
    contrast: float = 0.10
    saturation: float = 0.20
    blank_bottom_p: float = 0.5
    blank_bottom_rows: int = 48


def blank_bottom(image: npt.NDArray[np.uint8], rows: int) -> npt.NDArray[np.uint8]:
    """Fill the bottom ``rows`` rows with the median colour of the rest (where the scale-bar label is)."""
    out = image.copy()
    fill = np.median(image[:-rows].reshape(-1, 3), axis=0).astype(np.uint8)
    out[-rows:] = fill
    return out


def colour_jitter(image: npt.NDArray[np.uint8], rng: np.random.Generator, config: AugmentConfig) -> npt.NDArray[np.uint8]:
    """Small stain/illumination changes: per-channel gain, brightness, contrast, saturation."""
    x = image.astype(np.float32)
    x *= 1.0 + rng.uniform(-config.channel_gain, config.channel_gain, size=3).astype(np.float32)
    x *= 1.0 + rng.uniform(-config.brightness, config.brightness)
    mean = x.mean()
    x = (x - mean) * (1.0 + rng.uniform(-config.contrast, config.contrast)) + mean
    grey = x.mean(axis=2, keepdims=True)
    x = (x - grey) * (1.0 + rng.uniform(-config.saturation, config.saturation)) + grey
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def geometric(image: npt.NDArray[np.uint8], rng: np.random.Generator, config: AugmentConfig) -> npt.NDArray[np.uint8]:
    """Random flip, 90-degree rotation and a mild random crop resized back to the input size."""
    h, w = image.shape[:2]
    scale = rng.uniform(config.scale_min, 1.0)
    ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = image[top : top + ch, left : left + cw]
    if (ch, cw) != (h, w):
        out = np.asarray(Image.fromarray(out).resize((w, h), Image.Resampling.BILINEAR))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    out = np.rot90(out, k=int(rng.integers(0, 4)))
    return np.ascontiguousarray(out)


def augment(image: npt.NDArray[np.uint8], rng: np.random.Generator, config: AugmentConfig) -> npt.NDArray[np.uint8]:
    """The full training augmentation of one original image (before segmentation)."""
    if rng.random() < config.blank_bottom_p:
        image = blank_bottom(image, config.blank_bottom_rows)
    return colour_jitter(geometric(image, rng, config), rng, config)
