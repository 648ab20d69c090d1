"""Block split of the development images: blocks of consecutive image numbers per class.

The published names carry no patient IDs; re-captures of one field sit at neighbouring numbers, so an
image-by-image split leaks near-duplicates into validation. Rule: image number n (from the file name)
belongs to block (n - 1) // block_size of its class; per class, blocks are shuffled with ``seed`` and
taken into validation until at least ``val_fraction`` of that class's images are there.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

_NUMBER = re.compile(r"(\d+)(?=\.[A-Za-z]+$)")


@dataclass(frozen=True)
class LabelledImage:
    """One development image: path, class index and its number in the file name."""

    path: Path
    label: int
    number: int


def image_number(path: Path) -> int:
    """``WBC-Malignant-Pre-042.jpg`` -> 42."""
    match = _NUMBER.search(path.name)
    if match is None:
        raise ValueError(f"no image number in {path.name}")
    return int(match.group(1))


def block_key(image: LabelledImage, block_size: int) -> tuple[int, int]:
    """(class, block): the block of ``block_size`` consecutive image numbers an image belongs to."""
    return image.label, (image.number - 1) // block_size


def block_split(
    images: list[LabelledImage], block_size: int = 25, val_fraction: float = 0.18, seed: int = 20221
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """(train, val) with whole blocks on one side; deterministic for a given seed."""
    rng = random.Random(seed)
    blocks: dict[tuple[int, int], list[LabelledImage]] = defaultdict(list)
    for image in images:
        blocks[block_key(image, block_size)].append(image)
    val_keys: set[tuple[int, int]] = set()
    for label in sorted({image.label for image in images}):
        keys = sorted(key for key in blocks if key[0] == label)
        rng.shuffle(keys)
        total = sum(len(blocks[key]) for key in keys)
        taken = 0
        for key in keys:
            if taken >= val_fraction * total:
                break
            val_keys.add(key)
            taken += len(blocks[key])
    train = [image for key in sorted(blocks) if key not in val_keys for image in blocks[key]]
    val = [image for key in sorted(blocks) if key in val_keys for image in blocks[key]]
    return train, val


SELECTION_SEED = 20222
"""Seed of the selection part's block draw (the test part keeps the training seed 20221)."""
SELECTION_FRACTION = 0.2
"""Share of each class's training-block images drawn into the selection part."""


@dataclass(frozen=True)
class ThreeWaySplit:
    """Train / selection / test parts of the development images, whole blocks on one side each.

    ``test`` is ``block_split(images, block_size, test_fraction, test_seed)``'s validation part: the blocks the
    shipped weights were validated on (so never trained on). ``selection`` is carved out of the remaining
    (training) blocks by the same rule with ``selection_seed``; ``train`` is the rest. Choices (epochs, heads,
    temperature, QC statistics, gates) are made on train or selection; test is scored once per shipped model.
    """

    train: list[LabelledImage]
    selection: list[LabelledImage]
    test: list[LabelledImage]
    block_size: int
    test_fraction: float
    test_seed: int
    selection_fraction: float
    selection_seed: int

    @property
    def rule(self) -> str:
        """One line naming the rule and seeds (stored in manifests beside the figures)."""
        return (
            f"blocks of {self.block_size} consecutive image numbers per class; test: fraction {self.test_fraction}, "
            f"seed {self.test_seed} (the shipped model's validation blocks); selection: fraction {self.selection_fraction} "
            f"of the remaining blocks, seed {self.selection_seed}; train: the rest"
        )

    def part(self, name: str) -> list[LabelledImage]:
        """The part called ``name`` ("train", "selection" or "test")."""
        if name not in ("train", "selection", "test"):
            raise ValueError(f"unknown part {name!r} (train, selection or test)")
        parts: dict[str, list[LabelledImage]] = {"train": self.train, "selection": self.selection, "test": self.test}
        return parts[name]


def three_way_split(
    images: list[LabelledImage],
    block_size: int = 25,
    test_fraction: float = 0.18,
    test_seed: int = 20221,
    selection_fraction: float = SELECTION_FRACTION,
    selection_seed: int = SELECTION_SEED,
) -> ThreeWaySplit:
    """Split ``images`` into train, selection and test by whole blocks; deterministic for given seeds.

    The test part is exactly the two-way split's validation part with the same block size, fraction and seed
    (the shipped manifest's ``split_rule``), so no block the shipped weights trained on is in it.
    """
    rest, test = block_split(images, block_size, test_fraction, test_seed)
    train, selection = block_split(rest, block_size, selection_fraction, selection_seed)
    return ThreeWaySplit(train, selection, test, block_size, test_fraction, test_seed, selection_fraction, selection_seed)
