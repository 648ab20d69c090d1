"""Shared helpers for the DALI and GPU tests: skip markers, small graphs, DALI preparers and the recipe they reproduce."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest

from allbatch.core.records import EncodedImage
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.recipe import prepare_bytes
from allbatch.prepare.segment import SegmentationParams


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


HAS_DALI = _importable("nvidia.dali")
needs_dali = [pytest.mark.dali, pytest.mark.skipif(not HAS_DALI, reason="nvidia-dali is not installed")]
"""``pytestmark`` for every test that builds a DALI pipeline."""
SEG = SegmentationParams()
"""The default segmentation (the shipped model's)."""


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


def encoded(datas: list[bytes], first: int = 0) -> list[EncodedImage]:
    """Encoded bytes as the read stage hands them on (indices from ``first``, ``img000.png``, ...; status ok)."""
    return [EncodedImage(first + i, f"img{first + i:03d}.png", data, "") for i, data in enumerate(datas)]


def recipe_reference(data: bytes, prep: Preprocessing, seg: SegmentationParams = SEG) -> tuple[np.ndarray, float]:
    """The CPU recipe the DALI path must reproduce: ((2, 3, S, S) float32, mask fraction)."""
    prepared = prepare_bytes(data, prep, seg)
    return prepared.inputs, prepared.mask_fraction


def dali_cpu_preparer(prep: Preprocessing, max_batch: int = 16, **kwargs: Any) -> Any:
    """A ``DaliPreparer`` on DALI's CPU operators with the default segmentation and two threads."""
    from allbatch.prepare.dali.preparer import DaliPreparer

    return DaliPreparer(prep, SEG, device="cpu", max_batch=max_batch, num_threads=2, **kwargs)


def count_fed_batches(preparer: Any) -> list[int]:
    """Wrap ``preparer.runner.submit`` so that every batch the DALI runner is fed appends its size to the returned
    list (how many DALI runs a prepare took, and of what size)."""
    fed: list[int] = []
    submit = preparer.runner.submit

    def counting_submit(batch: list[bytes], heights: list[int] | None = None) -> Any:
        fed.append(len(batch))
        return submit(batch, heights)

    preparer.runner.submit = counting_submit
    return fed
