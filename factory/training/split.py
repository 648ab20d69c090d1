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
