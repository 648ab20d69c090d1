"""The three-way block split (training.split.three_way_split): deterministic, disjoint, whole blocks on one side,
and its test part is exactly the shipped model's validation part."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from paths import REPO, SHARED_DATASET

from factory.training.split import LabelledImage, block_key, block_split, three_way_split


def _images() -> list[LabelledImage]:
    """Four classes of 120-300 numbered images (a few numbers missing, as in the real folders)."""
    images = []
    for label, count in enumerate((120, 300, 290, 250)):
        for number in range(1, count + 1):
            if number % 37 != 0:
                images.append(LabelledImage(Path(f"C{label}/img-{number:03d}.jpg"), label, number))
    return images


def test_split_is_deterministic_disjoint_and_complete() -> None:
    images = _images()
    first, second = three_way_split(images), three_way_split(images)
    assert (first.train, first.selection, first.test) == (second.train, second.selection, second.test)
    parts = [{image.path for image in part} for part in (first.train, first.selection, first.test)]
    assert all(parts)
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert parts[0] | parts[1] | parts[2] == {image.path for image in images}
    other_seed = three_way_split(images, selection_seed=1)
    assert other_seed.test == first.test and other_seed.selection != first.selection


def test_split_keeps_whole_blocks_on_one_side() -> None:
    split = three_way_split(_images())
    side = {}
    for name in ("train", "selection", "test"):
        for image in split.part(name):
            assert side.setdefault(block_key(image, 25), name) == name
    for label in range(4):  # every class is in every part, near the asked fractions
        test = sum(image.label == label for image in split.test)
        selection = sum(image.label == label for image in split.selection)
        total = sum(image.label == label for image in _images())
        assert 0.18 <= test / total < 0.18 + 25 / total
        assert 0.2 <= selection / (total - test) < 0.2 + 25 / (total - test)


def test_test_part_is_the_two_way_validation_part() -> None:
    images = _images()
    assert three_way_split(images).test == block_split(images, 25, 0.18, 20221)[1]


@pytest.mark.skipif(not (SHARED_DATASET / "Original").is_dir(), reason="the development dataset is not beside the checkout")
def test_test_part_is_the_shipped_models_validation_blocks() -> None:
    from factory.training.data import list_development_images

    root = SHARED_DATASET / "Original"
    split = three_way_split(list_development_images(root))
    manifest = json.loads((REPO / "allbatch/engines/allbatch-densenet201.json").read_text())
    assert sorted(str(image.path.relative_to(root)) for image in split.test) == sorted(manifest["training"]["val_files"])
    assert (len(split.train), len(split.selection), len(split.test)) == (1583, 477, 496)
