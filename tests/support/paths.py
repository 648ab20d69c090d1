"""Where the tests find the repository, the shipped demo images and the development dataset."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository root (this file is tests/support/paths.py)."""
DEMO = REPO / "allbatch" / "demo"
"""The eight development images shipped with the package."""
DATA = REPO / "tests" / "data"
"""The tests' own small data files."""
SHARED_DATASET = REPO.parent / "shared" / "data" / "all-kaggle"
"""The development dataset beside the checkout, when present (../shared/data/all-kaggle)."""
