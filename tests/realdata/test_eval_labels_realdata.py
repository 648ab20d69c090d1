"""Truth labels on the development dataset: its folder names (Original/ and Segmented/) map to the four classes."""

from __future__ import annotations

import pytest
from paths import require_dataset

from allbatch import CLASS_NAMES
from allbatch.evaluation.labels import default_class_for

pytestmark = pytest.mark.realdata


def test_the_dataset_folders_map_to_the_four_classes() -> None:
    root = require_dataset()
    for part in ("Original", "Segmented"):
        folders = sorted(p.name for p in (root / part).iterdir() if p.is_dir())
        assert sorted(default_class_for(f) or "?" for f in folders) == sorted(CLASS_NAMES), (part, folders)
