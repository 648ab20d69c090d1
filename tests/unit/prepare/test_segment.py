"""Segmentation: bit-exact with the authors' OpenCV calls; agreement with their Segmented/ images."""

from __future__ import annotations

import numpy as np
import pytest
from image_factory import DATASET

import allbatch.prepare.segment as segment_module
from allbatch.input.decode import decode_rgb
from allbatch.prepare.segment import SegmentationParams, authors_mask, mask_iou, opencv_rgb2hsv, segment

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (dev extra) is the reference implementation")
needs_data = pytest.mark.skipif(not DATASET.is_dir(), reason=f"development images not present at {DATASET}")


@pytest.fixture(params=["opencv", "numpy"])
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``segment`` through OpenCV (what runs where it is installed) or through the NumPy port (where it is not)."""
    if request.param == "numpy":
        monkeypatch.setattr(segment_module, "opencv", lambda: None)
    else:
        assert segment_module.opencv() is cv2
    return str(request.param)


def opencv_reference(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The authors' calls on a BGR array: (masked HSV as stored in their JPEG read as RGB, mask)."""
    hsv = cv2.cvtColor(bgr, cv2.COLOR_RGB2HSV)
    mask = cv2.inRange(hsv, (168, 50, 50), (182, 255, 255))
    masked = cv2.bitwise_and(hsv, hsv, mask=mask)
    return masked[..., ::-1], mask > 0


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


@needs_data
@pytest.mark.realdata
def test_bit_exact_with_opencv_on_every_development_image(implementation: str) -> None:
    files = sorted((DATASET / "Original").glob("*/*.jpg"))
    assert len(files) == 2556
    differing_pixels = 0
    for path in files:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        ours, mask = segment(np.ascontiguousarray(bgr[..., ::-1]), SegmentationParams())
        ref, ref_mask = opencv_reference(bgr)
        differing_pixels += int((mask != ref_mask).sum()) + int((ours != ref).any(axis=-1).sum())
    assert differing_pixels == 0


@needs_data
@pytest.mark.realdata
def test_pillow_decode_equals_opencv_decode_on_development_images() -> None:
    for path in sorted((DATASET / "Original").glob("*/*.jpg"))[::40]:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert np.array_equal(decode_rgb(path.read_bytes()), bgr[..., ::-1]), path.name


@needs_data
@pytest.mark.realdata
def test_agreement_with_authors_masks_regression() -> None:
    """Measured 2026-11-24 (all 2,556): median 0.817, p10 0.358; Pro median 0.393. Guard against drift."""
    from factory.segment_agreement import agreement

    per_class, overall = agreement(DATASET)
    by_name = {row.name: row for row in per_class}
    assert overall.n == 2556
    assert 0.80 <= overall.median <= 0.84
    assert 0.33 <= overall.p10 <= 0.39
    assert 0.37 <= by_name["Pro"].median <= 0.42
    assert by_name["Pre"].median >= 0.88


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
