"""Segmentation: bit-exact with the authors' OpenCV calls on every colour (on every development image, and the
agreement with their Segmented/ images: tests/realdata/test_segment_realdata.py)."""

from __future__ import annotations

import numpy as np
import pytest
from segment_support import IMPLEMENTATIONS, opencv_reference, use_implementation

import allbatch.prepare.segment as segment_module
from allbatch.prepare.segment import SegmentationParams, authors_mask, mask_iou, opencv_rgb2hsv, segment

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (dev extra) is the reference implementation")


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``segment`` through OpenCV (what runs where it is installed) or through the NumPy port (where it is not)."""
    return use_implementation(request.param, monkeypatch)


def test_hsv_matches_opencv_on_every_8bit_colour() -> None:
    levels = np.arange(256, dtype=np.uint8)
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    every = np.stack([r, g, b], axis=-1).reshape(4096, 4096, 3)
    assert np.array_equal(opencv_rgb2hsv(every), cv2.cvtColor(every, cv2.COLOR_RGB2HSV))


def test_segment_matches_opencv_on_every_8bit_colour(implementation: str) -> None:
    levels = np.arange(0, 256, 3, dtype=np.uint8)
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    rgb = np.stack([r, g, b], axis=-1).reshape(-1, levels.size, 3)
    segmented, mask = segment(rgb, SegmentationParams())
    ref_segmented, ref_mask = opencv_reference(np.ascontiguousarray(rgb[..., ::-1]))
    assert np.array_equal(mask, ref_mask)
    assert np.array_equal(segmented, ref_segmented)
    assert 0 < mask.mean() < 0.2


def test_mask_helpers() -> None:
    a = np.zeros((4, 4), bool)
    assert mask_iou(a, a) == 1.0
    b = a.copy()
    b[0, :2] = True
    c = a.copy()
    c[0, 1:3] = True
    assert mask_iou(b, c) == pytest.approx(1 / 3)
    seg = np.zeros((2, 2, 3), np.uint8)
    seg[0, 0] = (100, 40, 20)
    assert authors_mask(seg).tolist() == [[True, False], [False, False]]


@pytest.mark.parametrize("stripe_pixels", [1, 997, 50_000])
def test_segmenting_in_stripes_equals_one_pass(monkeypatch: pytest.MonkeyPatch, stripe_pixels: int, implementation: str) -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (173, 211, 3), dtype=np.uint8)
    monkeypatch.setattr(segment_module, "STRIPE_PIXELS", 10**9)
    whole, whole_mask = segment(rgb, SegmentationParams())
    monkeypatch.setattr(segment_module, "STRIPE_PIXELS", stripe_pixels)
    striped, striped_mask = segment(rgb, SegmentationParams())
    assert np.array_equal(striped, whole) and np.array_equal(striped_mask, whole_mask)
    assert whole_mask.any() and not whole_mask.all()


def test_both_implementations_agree_on_a_non_contiguous_view(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rotated / flipped view (training augmentation hands such arrays over) segments the same either way."""
    rgb = np.rot90(np.random.default_rng(5).integers(0, 256, (61, 47, 3), dtype=np.uint8))[:, ::-1]
    with_opencv = segment(rgb, SegmentationParams())
    monkeypatch.setattr(segment_module, "opencv", lambda: None)
    without = segment(rgb, SegmentationParams())
    assert np.array_equal(with_opencv[0], without[0]) and np.array_equal(with_opencv[1], without[1])
    assert with_opencv[1].any()
