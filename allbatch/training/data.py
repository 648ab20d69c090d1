"""Training data: the development images, our own segmentation as the second channel, augmentation."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from torch.utils.data import Dataset

from allbatch import CLASS_NAMES
from allbatch.preprocess import Preprocessing, blank_bottom_band, normalise_pair, resize_rgb
from allbatch.segment import SegmentationParams, segment
from allbatch.training.augment import AugmentConfig, augment
from allbatch.training.split import LabelledImage, image_number


def list_development_images(root: Path) -> list[LabelledImage]:
    """``root/<Class>/*.jpg`` with class folders named as ``CLASS_NAMES``; sorted, labelled."""
    images = []
    for label, name in enumerate(CLASS_NAMES):
        for path in sorted((root / name).glob("*.jpg")):
            images.append(LabelledImage(path=path, label=label, number=image_number(path)))
    if not images:
        raise FileNotFoundError(f"no images under {root}/<{'|'.join(CLASS_NAMES)}>/")
    return images


def data_manifest_sha256(images: list[LabelledImage], root: Path) -> str:
    """sha256 over the sorted ``relative path:file sha256`` lines: identifies the training data."""
    lines = sorted(f"{image.path.relative_to(root)}:{hashlib.sha256(image.path.read_bytes()).hexdigest()}" for image in images)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def load_rgb(path: Path) -> npt.NDArray[np.uint8]:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


class PairDataset(Dataset[tuple[torch.Tensor, int]]):
    """Yields ((2, 3, S, S) float32 input, label); originals are kept decoded in memory.

    With ``augment_config`` set, each item is augmented before segmentation, so the second channel is
    always allbatch's own segmentation of exactly the pixels in the first.
    """

    def __init__(
        self,
        images: list[LabelledImage],
        prep: Preprocessing,
        seg: SegmentationParams,
        augment_config: AugmentConfig | None,
        seed: int,
    ) -> None:
        self.images = images
        self.pixels = [load_rgb(image.path) for image in images]
        self.prep = prep
        self.seg = seg
        self.augment_config = augment_config
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rgb = blank_bottom_band(self.pixels[index], self.prep)  # before augmentation: the label sits at the bottom
        if self.augment_config is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            rgb = augment(rgb, rng, self.augment_config)
        segmented, _ = segment(rgb, self.seg)
        pair = normalise_pair(resize_rgb(rgb, self.prep.size), resize_rgb(segmented, self.prep.size), self.prep)
        return torch.from_numpy(pair), self.images[index].label
