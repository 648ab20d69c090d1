"""Out-of-distribution inputs for the quality-control tests and measurements (issue 11, point 2).

Every set is made here from real smears or from photographs that scikit-image ships inside its wheel
(no download), JPEG-encoded as a user's files would be:
  photos   natural photographs (each whole, and two 224-pixel crops)
  uniform  single-colour images (random colours) and uniform greys
  grey     smears converted to grey levels
  blur3    smears blurred with a Gaussian of sigma 3 (per channel, at native size)
  hue90    smears with the hue rotated by 90 degrees (a wrong stain)
  crop32   32 x 32 crops of smears
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from PIL import Image
from scipy import ndimage

PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "moon",
    "page",
    "rocket",
    "text",
)
"""scikit-image sample photographs bundled in its wheel (skimage.data loads them without a download)."""

Image8 = npt.NDArray[np.uint8]


def encode_jpeg(rgb: Image8, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _rgb(array: npt.NDArray[np.generic]) -> Image8:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.ascontiguousarray(array[..., :3]).astype(np.uint8)


def photographs(seed: int = 0) -> list[tuple[str, bytes]]:
    """Each bundled photograph whole and as two random 224 x 224 crops (42 images)."""
    import skimage.data

    rng = np.random.default_rng(seed)
    out = []
    for name in PHOTOS:
        rgb = _rgb(getattr(skimage.data, name)())
        out.append((f"photos/{name}.jpg", encode_jpeg(rgb)))
        for k in range(2):
            y = int(rng.integers(0, max(1, rgb.shape[0] - 224)))
            x = int(rng.integers(0, max(1, rgb.shape[1] - 224)))
            out.append((f"photos/{name}_crop{k}.jpg", encode_jpeg(rgb[y : y + 224, x : x + 224])))
    return out


def uniform_images(n_colours: int = 20, n_greys: int = 10, seed: int = 0) -> list[tuple[str, bytes]]:
    """224 x 224 images of one random colour each, and uniform greys from black to white."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_colours):
        colour = rng.integers(0, 256, 3).astype(np.uint8)
        out.append((f"uniform/colour{i:02d}.jpg", encode_jpeg(np.broadcast_to(colour, (224, 224, 3)).copy())))
    for level in np.linspace(0, 255, n_greys).astype(np.uint8):
        out.append((f"uniform/grey{level:03d}.jpg", encode_jpeg(np.full((224, 224, 3), level, dtype=np.uint8))))
    return out


def to_grey(rgb: Image8) -> Image8:
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    return _rgb(grey)


def blurred(rgb: Image8, sigma: float = 3.0) -> Image8:
    return np.clip(ndimage.gaussian_filter(rgb.astype(np.float32), sigma=(sigma, sigma, 0)), 0, 255).round().astype(np.uint8)


def hue_rotated(rgb: Image8, degrees: float = 90.0) -> Image8:
    """Rotate the hue by ``degrees`` (Pillow HSV, hue 0..255 for 0..360 degrees)."""
    hsv = np.asarray(Image.fromarray(rgb).convert("HSV")).copy()
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + round(degrees / 360 * 256)) % 256).astype(np.uint8)
    return np.asarray(Image.fromarray(hsv, mode="HSV").convert("RGB"))


def crop32(rgb: Image8, seed: int = 0) -> Image8:
    """A 32 x 32 crop from the upper part of the image (above any label band)."""
    rng = np.random.default_rng(seed)
    y = int(rng.integers(0, max(1, rgb.shape[0] // 2 - 32)))
    x = int(rng.integers(0, max(1, rgb.shape[1] - 32)))
    return np.ascontiguousarray(rgb[y : y + 32, x : x + 32])


SMEAR_TRANSFORMS: dict[str, Callable[[Image8, int], Image8]] = {
    "grey": lambda rgb, i: to_grey(rgb),
    "blur3": lambda rgb, i: blurred(rgb, 3.0),
    "hue90": lambda rgb, i: hue_rotated(rgb, 90.0),
    "crop32": lambda rgb, i: crop32(rgb, i),
}


def smear_variants(smears: list[tuple[str, Image8]]) -> list[tuple[str, bytes]]:
    """Every transform of ``SMEAR_TRANSFORMS`` applied to each (name, RGB smear), as ``<set>/<name>``."""
    return [
        (f"{set_name}/{name}", encode_jpeg(transform(rgb, i)))
        for set_name, transform in SMEAR_TRANSFORMS.items()
        for i, (name, rgb) in enumerate(smears)
    ]


def ood_sets(smears: list[tuple[str, Image8]]) -> list[tuple[str, bytes]]:
    """All sets; the set is the first path component of each name."""
    return [*photographs(), *uniform_images(), *smear_variants(smears)]
