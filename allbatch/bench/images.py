"""Which images ``allbatch bench`` measures, said in words: SRC, else the development dataset when it can be found
(beside a source checkout, beside the virtual environment a checkout's ``.venv`` is, or beside the current folder),
else the 8 demo images shipped in the package. Then the images picked, staged flat, and the batch sizes capped.

The dataset lives outside the package (its authors ask that it not be redistributed), so a non-editable install
(``pip install .``, the files in site-packages) cannot find it from its own location: the virtual environment's
folder (``sys.prefix``) and the current folder are searched too, and the output says which images ran and why.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from allbatch.environment.machine import REPO_ROOT
from allbatch.input.discover import DiscoveredFile

DATASET_RELATIVE = Path("shared") / "data" / "all-kaggle" / "Original"
"""Where the development dataset sits relative to the folder that holds the checkout (e.g. /work/shared/...)."""
DATASET_ORIGINAL = REPO_ROOT.parent / DATASET_RELATIVE
"""The dataset beside a source checkout (editable install); ``dataset_candidates`` adds the other places."""
DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
"""The 8 images shipped with the package (2 per class), present in every install."""


@dataclass(frozen=True)
class ImageSource:
    """The folder ``bench`` reads and, in words, what it is (printed before the run, kept in the report)."""

    path: Path
    origin: str


def dataset_candidates() -> list[Path]:
    """Where the development dataset may be, first match wins: beside the checkout the code runs from (editable
    install), beside the checkout holding the virtual environment (``.venv`` of a fresh clone with ``pip install .``),
    beside the current folder and the current folder's own ``shared/``."""
    roots = [REPO_ROOT, Path(sys.prefix).resolve().parent, Path.cwd()]
    candidates = [root.parent / DATASET_RELATIVE for root in roots] + [Path.cwd() / DATASET_RELATIVE]
    return list(dict.fromkeys(candidates))


def resolve_source(src: Path | None) -> ImageSource:
    """SRC as given; else the development dataset where ``dataset_candidates`` finds it; else the demo images."""
    if src is not None:
        return ImageSource(src, f"SRC {src}")
    for candidate in dataset_candidates():
        if candidate.is_dir():
            return ImageSource(candidate, f"the development dataset at {candidate}")
    return ImageSource(
        DEMO_DIR,
        f"the 8 demo images shipped with allbatch ({DEMO_DIR}): the development dataset was not found at "
        f"{', '.join(str(c) for c in dataset_candidates())}; give SRC to bench other images",
    )


def default_source() -> Path:
    """The folder ``bench`` reads without SRC (see ``resolve_source``)."""
    return resolve_source(None).path


def cap_batch_sizes(sizes: tuple[int, ...], images: int) -> tuple[int, ...]:
    """Each batch size capped at the number of benchmark images (a batch larger than the run only pads memory:
    DenseNet201's activations take about 80 MB an image), duplicates removed, order kept."""
    return tuple(dict.fromkeys(min(size, images) for size in sizes))


def select_images(files: list[DiscoveredFile], limit: int | None) -> list[DiscoveredFile]:
    """``limit`` files spread evenly over ``files`` (all classes of a class-sorted folder), in order.

    A ``limit`` above the number of usable files repeats them in order (``stage_images`` gives every copy a file
    of its own): on a GPU a run of a few batches is mostly the decoder's and the engine's start-up, and the
    images at hand (e.g. the 2,556 development images) are too few for a steady-state figure.
    """
    usable = [item for item in files if item.problem is None]
    if limit is not None and usable and limit > len(usable):
        return [usable[i % len(usable)] for i in range(limit)]
    if limit is None or limit >= len(usable):
        return usable
    picks = np.linspace(0, len(usable) - 1, num=limit).round().astype(int)
    return [usable[i] for i in picks]


def stage_images(files: list[DiscoveredFile], folder: Path) -> None:
    """Copy ``files`` flat into ``folder`` (``000000-name.jpg``, keeping their order): every measurement then
    reads the same bytes from the same file system."""
    folder.mkdir(parents=True)
    for index, item in enumerate(files):
        shutil.copyfile(item.path, folder / f"{index:06d}-{item.path.name}")


def describe_images(folder: Path) -> dict[str, Any]:
    """Count, bytes and pixel sizes (from the headers) of the benchmark images."""
    from PIL import Image

    sizes: list[tuple[int, int]] = []
    total = 0
    for path in sorted(folder.iterdir()):
        total += path.stat().st_size
        with Image.open(path) as image:
            sizes.append(image.size)
    megapixels = [w * h / 1e6 for w, h in sizes]
    smallest = min(sizes, key=lambda size: size[0] * size[1])
    largest = max(sizes, key=lambda size: size[0] * size[1])
    return {
        "images": len(sizes),
        "bytes_total": total,
        "width_height_min": list(smallest),
        "width_height_max": list(largest),
        "megapixels_median": round(float(np.median(megapixels)), 3),
    }
