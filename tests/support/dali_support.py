"""Shared helpers for the DALI and GPU tests: skip markers, development images, small graphs."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from paths import REPO

_BESIDE_THE_CHECKOUT = REPO.parent / "shared" / "data" / "all-kaggle"
DATASET_ROOT = Path(os.environ.get("ALLBATCH_DATASET_ROOT") or _BESIDE_THE_CHECKOUT)
"""The development images (``Original/<class>/*.jpg``): beside the checkout, or ``$ALLBATCH_DATASET_ROOT`` (a
worktree elsewhere, the images staged on a GPU machine)."""


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


HAS_DALI = _importable("nvidia.dali")
needs_dali = [pytest.mark.dali, pytest.mark.skipif(not HAS_DALI, reason="nvidia-dali is not installed")]
"""``pytestmark`` for every test that builds a DALI pipeline."""


def cuda_reason() -> str | None:
    """None when CuPy sees a CUDA GPU, else why the GPU tests skip."""
    if not _importable("cupy"):
        return "cupy is not installed"
    import cupy

    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        return f"no CUDA runtime: {exc}"
    return None if count > 0 else "no CUDA GPU"


def require_dataset() -> Path:
    """The development images' root; skips the calling test when they are absent."""
    if not (DATASET_ROOT / "Original").is_dir():
        pytest.skip(f"development images not present at {DATASET_ROOT}")
    return DATASET_ROOT


def development_files(root: Path, count: int = 64) -> list[Path]:
    """``count`` development originals spread evenly over the sorted list (all four classes)."""
    files = sorted((root / "Original").glob("*/*.jpg"))
    step = max(1, len(files) // count)
    return files[::step][:count]


def every_colour(tiles: int = 16) -> np.ndarray:
    """All 2**24 8-bit RGB colours as (tiles, side, side, 3) uint8 (side * side * tiles = 2**24)."""
    codes = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([(codes >> 16) & 255, (codes >> 8) & 255, codes & 255], axis=-1).astype(np.uint8)
    side = int(np.sqrt((1 << 24) // tiles))
    return rgb.reshape(tiles, side, side, 3)


def run_raw_graph(images: list[np.ndarray], build: Any, device: str = "cpu") -> list[Any]:
    """Feed (H, W, 3) uint8 arrays straight into ``build(node)`` (no decoder); returns host TensorLists."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=len(images), num_threads=2, device_id=None if device == "cpu" else 0, prefetch_queue_depth=1)
    def raw() -> Any:
        node = fn.external_source(name="raw", batch=True, dtype=types.UINT8, ndim=3, layout="HWC", device=device)
        return build(node)

    pipe = raw()
    pipe.build()
    outputs = pipe.run(raw=images)
    return [out.as_cpu() if hasattr(out, "as_cpu") else out for out in outputs]
