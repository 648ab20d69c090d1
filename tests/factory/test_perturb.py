"""Camera and stain perturbations (factory.perturb) and the training augmentation built on them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from paths import REPO
from PIL import Image

from allbatch.input.decode import decode_rgb
from allbatch.prepare.segment import opencv_rgb2hsv
from factory import perturb

pytest.importorskip("cv2", reason="perturbations need OpenCV (robust extra)")
DEMO = REPO / "allbatch" / "demo"


@pytest.fixture(scope="module")
def smear() -> np.ndarray:
    return decode_rgb((DEMO / "Early" / "WBC-Malignant-Early-501.jpg").read_bytes())


def test_hue_shift_moves_opencv_hue_by_the_units() -> None:
    patch = np.zeros((4, 4, 3), np.uint8)
    patch[:] = (200, 60, 150)  # saturated purple, far from the hue wrap
    for units in (3, -3):
        before = opencv_rgb2hsv(patch)[..., 0].astype(int)
        after = opencv_rgb2hsv(perturb.hue_saturation(patch, hue_units=units))[..., 0].astype(int)
        assert np.all(np.abs(((after - before - units + 90) % 180) - 90) <= 1)


def test_saturation_scales_s_and_keeps_v(smear: np.ndarray) -> None:
    before = opencv_rgb2hsv(smear).astype(float)
    after = opencv_rgb2hsv(perturb.hue_saturation(smear, saturation=0.8)).astype(float)
    assert np.abs(after[..., 1] - 0.8 * before[..., 1]).mean() < 1.0
    assert np.abs(after[..., 2] - before[..., 2]).max() <= 1
    assert np.array_equal(perturb.hue_saturation(smear), smear)  # no change: lossless float round trip


def test_brightness_gamma_gains_follow_their_formulas(smear: np.ndarray) -> None:
    x = smear.astype(float)
    assert np.array_equal(perturb.brightness(smear, 0.9), np.clip(np.rint(x * 0.9), 0, 255).astype(np.uint8))
    assert np.array_equal(perturb.gamma(smear, 1.0), smear)
    assert np.abs(perturb.gamma(smear, 1.25).astype(float) - 255 * (x / 255) ** 1.25).max() <= 0.5
    assert perturb.gamma(smear, 1.25).mean() < smear.mean() < perturb.gamma(smear, 0.8).mean()
    gains = np.array([1.0, 0.5, 1.0], np.float32)
    assert np.array_equal(perturb.channel_gains(smear, gains)[..., 1], np.rint(x[..., 1] * 0.5).astype(np.uint8))


def test_jpeg_blur_and_rescale(smear: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(smear).save(buffer, format="JPEG", quality=70)
    assert np.array_equal(perturb.jpeg(smear, 70), decode_rgb(buffer.getvalue()))
    x = smear.astype(float)
    blurred = perturb.gaussian_blur(smear, 1.0)
    assert blurred.shape == smear.shape
    assert np.abs(np.diff(blurred.astype(float), axis=1)).mean() < np.abs(np.diff(x, axis=1)).mean()
    assert np.array_equal(perturb.gaussian_blur(smear, 0.0), smear)
    assert perturb.rescale(smear, 2.0, jpeg_quality=90).shape == (448, 448, 3)
    assert perturb.rescale(smear, 0.75).shape == (168, 168, 3)
    assert abs(perturb.rescale(smear, 0.75).astype(float).mean() - x.mean()) < 2.0


def test_augmentation_is_reproducible_and_varies(smear: np.ndarray) -> None:
    from factory.training.augment import AugmentConfig, augment

    config = AugmentConfig()
    first = augment(smear, np.random.default_rng((1, 0, 5)), config)
    again = augment(smear, np.random.default_rng((1, 0, 5)), config)
    other = augment(smear, np.random.default_rng((1, 1, 5)), config)
    assert np.array_equal(first, again)
    assert first.shape[2] == 3 and first.dtype == np.uint8
    assert first.shape != other.shape or not np.array_equal(first, other)
