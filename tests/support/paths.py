"""Where the tests find the repository, the shipped demo images and the development dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
"""The repository root (this file is tests/support/paths.py)."""
DEMO = REPO / "allbatch" / "demo"
"""The eight development images shipped with the package."""
DATA = REPO / "tests" / "data"
"""The tests' own small data files."""
SHARED_DATASET = REPO.parent / "shared" / "data" / "all-kaggle"
"""The development dataset beside the checkout, when present (../shared/data/all-kaggle)."""
DATASET_ROOT = Path(os.environ.get("ALLBATCH_DATASET_ROOT") or SHARED_DATASET)
"""The development images (``Original/<class>/*.jpg``, ``Segmented/...``): ``$ALLBATCH_DATASET_ROOT`` (a worktree
elsewhere, the images staged on a GPU machine), else beside the checkout."""


def require_dataset() -> Path:
    """The development images' root; skips the calling test when they are absent (the ``realdata`` tests)."""
    if not (DATASET_ROOT / "Original").is_dir():
        pytest.skip(f"development images not present at {DATASET_ROOT}")
    return DATASET_ROOT


def development_files(root: Path, count: int = 64) -> list[Path]:
    """``count`` development originals spread evenly over the sorted list (all four classes)."""
    files = sorted((root / "Original").glob("*/*.jpg"))
    step = max(1, len(files) // count)
    return files[::step][:count]
