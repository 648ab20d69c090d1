"""Training augmentation of one (H, W, 3) uint8 RGB original, applied before segmentation.

Geometry (flips, 90-degree rotations, a mild crop) and the camera / stain changes of the robustness
suite (``factory.perturb``) at random strengths that cover the suite's: hue, saturation, brightness,
gamma, per-channel stain gains, blur, rescaling and JPEG re-encoding. Because it runs before
segmentation, the mask (the second channel) varies as it will on other microscopes and stains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from factory import perturb


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random changes (each drawn independently per image and epoch).

    ``hue_units``: +- OpenCV 8-bit hue units (2 degrees each); ``saturation``/``brightness``: factor in
    1 +- this; ``gamma``: exponent in [1/gamma, gamma] (log-uniform); ``channel_gain``: per-channel
    factor in 1 +- this; ``blur_p``/``blur_sigma``: probability and max sigma (pixels) of a Gaussian
    blur; ``rescale_p``/``rescale``: probability and (min, max) factor of a resize (log-uniform);
    ``jpeg_p``/``jpeg_quality``: probability and (min, max) quality of a JPEG re-encode;
    ``simple_upsampling_p``: probability that the original is the file decoded as nvJPEG decodes it (simple
    chroma upsampling, ``decode_rgb_simple_upsampling``) rather than as Pillow does, so that the model does not
    learn one decoder's colour edges (the GPU and CPU paths decode with different upsampling).
    """

    scale_min: float = 0.85
    hue_units: float = 5.0
    saturation: float = 0.3
    brightness: float = 0.15
    gamma: float = 1.4
    channel_gain: float = 0.05
    blur_p: float = 0.3
    blur_sigma: float = 1.5
    rescale_p: float = 0.3
    rescale: tuple[float, float] = (0.65, 2.2)
    jpeg_p: float = 0.4
    jpeg_quality: tuple[int, int] = (60, 95)
    blank_bottom_p: float = 0.0
    blank_bottom_rows: int = 48
    simple_upsampling_p: float = 0.5


def blank_bottom(image: npt.NDArray[np.uint8], rows: int) -> npt.NDArray[np.uint8]:
    """Fill the bottom ``rows`` rows with the median colour of the rest (where the scale-bar label is)."""
    out = image.copy()
    fill = np.median(image[:-rows].reshape(-1, 3), axis=0).astype(np.uint8)
    out[-rows:] = fill
    return out


def colour_and_camera(image: npt.NDArray[np.uint8], rng: np.random.Generator, config: AugmentConfig) -> npt.NDArray[np.uint8]:
    """Random stain (hue, saturation, channel gains), illumination (brightness, gamma) and camera
    (blur, resolution, JPEG) changes, in the order light meets them."""
    out = perturb.hue_saturation(
        image,
        hue_units=float(rng.uniform(-config.hue_units, config.hue_units)),
        saturation=float(rng.uniform(1 - config.saturation, 1 + config.saturation)),
    )
    gains = rng.uniform(1 - config.channel_gain, 1 + config.channel_gain, size=3).astype(np.float32)
    out = perturb.channel_gains(out, gains * np.float32(rng.uniform(1 - config.brightness, 1 + config.brightness)))
    out = perturb.gamma(out, float(np.exp(rng.uniform(-np.log(config.gamma), np.log(config.gamma)))))
    if rng.random() < config.blur_p:
        out = perturb.gaussian_blur(out, float(rng.uniform(0.3, config.blur_sigma)))
    if rng.random() < config.rescale_p:
        low, high = np.log(config.rescale[0]), np.log(config.rescale[1])
        out = perturb.rescale(out, float(np.exp(rng.uniform(low, high))))
    if rng.random() < config.jpeg_p:
        out = perturb.jpeg(out, int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1)))
    return out


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
    """The full training augmentation of one original image (after band blanking, before segmentation)."""
    if rng.random() < config.blank_bottom_p:
        image = blank_bottom(image, config.blank_bottom_rows)
    return colour_and_camera(geometric(image, rng, config), rng, config)
