"""Training data: the development images through the one preparation recipe (``allbatch.prepare.recipe``),
with augmentation of the original before segmentation."""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from allbatch import CLASS_NAMES
from allbatch.input.decode import decode_rgb_simple_upsampling
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.recipe import ImageChange, prepare_rgb, read_rgb
from allbatch.prepare.segment import SegmentationParams
from factory.training.augment import AugmentConfig, augment
from factory.training.split import LabelledImage, image_number


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


class PairDataset(Dataset[tuple[torch.Tensor, int]]):
    """Yields ((2, 3, S, S) float32 input, label); originals are kept decoded in memory.

    With ``augment_config`` set, each item is augmented before segmentation, so the second channel is
    always allbatch's own segmentation of exactly the pixels in the first, and starts, with probability
    ``simple_upsampling_p``, from the file decoded as the GPU path's nvJPEG decodes it (kept in memory too).
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
        self.pixels: list[npt.NDArray[np.uint8]] = [read_rgb(image.path) for image in images]  # as inference decodes
        self.simple_pixels: list[npt.NDArray[np.uint8]] = []
        if augment_config is not None and augment_config.simple_upsampling_p > 0:
            self.simple_pixels = [decode_rgb_simple_upsampling(image.path.read_bytes()) for image in images]
        self.prep = prep
        self.seg = seg
        self.augment_config = augment_config
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        change: ImageChange | None = None
        pixels = self.pixels[index]
        if self.augment_config is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))  # reproducible per (seed, epoch, image)
            if self.simple_pixels and rng.random() < self.augment_config.simple_upsampling_p:
                pixels = self.simple_pixels[index]
            change = partial(augment, rng=rng, config=self.augment_config)
        prepared = prepare_rgb(pixels, self.prep, self.seg, change)
        return torch.from_numpy(prepared.inputs), self.images[index].label
