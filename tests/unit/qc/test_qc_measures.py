"""Quality-control measures: each against an independent computation (the CuPy path against NumPy:
tests/gpu/test_qc_measures_cupy.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from qc_support import PREP, model_inputs
from scipy import ndimage
from scipy.special import logsumexp, softmax

from allbatch.qc import measures as measures_module
from allbatch.qc.flags import QcFlag, flag_words, reason
from allbatch.qc.measures import confidence_measures, count_components, input_measures, mahalanobis_distance
from allbatch.qc.stage import apply_rules
from allbatch.qc.stats import Rule, decode_array, encode_array
from factory.qc_collect import Collected
from factory.qc_fit import fit_qc


def test_confidence_measures_match_scipy() -> None:
    logits = np.random.default_rng(0).normal(scale=3.0, size=(50, 4)).astype(np.float32)
    got = confidence_measures(logits)
    p = softmax(logits.astype(np.float64), axis=1)
    ordered = np.sort(p, axis=1)
    np.testing.assert_allclose(got["max_prob"], ordered[:, -1], rtol=1e-5)
    np.testing.assert_allclose(got["margin"], ordered[:, -1] - ordered[:, -2], atol=1e-6)
    np.testing.assert_allclose(got["entropy"], -(p * np.log(p)).sum(axis=1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["energy"], -logsumexp(logits.astype(np.float64), axis=1), rtol=1e-5)
    assert all(v.dtype == np.float32 and v.shape == (50,) for v in got.values())


@pytest.fixture(params=["opencv", "scipy"])
def labelling(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Components counted through OpenCV (the host path where it is installed) or SciPy (where it is not)."""
    if request.param == "scipy":
        monkeypatch.setattr(measures_module, "opencv", lambda: None)
    else:
        pytest.importorskip("cv2", reason="the OpenCV labelling needs OpenCV")
    return str(request.param)


def test_components_are_counted_per_image_like_scipy_label(labelling: str) -> None:
    rng = np.random.default_rng(1)
    masks = rng.random((6, 40, 40)) > 0.93
    masks[2] = False  # an empty image
    masks[3] = True  # one region touching every border: must not merge with images 2 and 4
    expected = [ndimage.label(m, structure=np.ones((3, 3)))[1] for m in masks]
    assert count_components(masks).tolist() == expected


def test_input_measures_of_known_images(labelling: str) -> None:
    size = PREP.size
    rng = np.random.default_rng(2)
    flat = np.full((size, size, 3), (200, 150, 220), dtype=np.uint8)
    noisy = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    noisy[size - PREP.blank_rows(size) :] = 0  # the blanked band is left out of every measure
    smooth = ndimage.gaussian_filter(noisy.astype(np.float32), sigma=(3, 3, 0)).astype(np.uint8)
    segmented = np.zeros((3, size, size, 3), dtype=np.uint8)
    segmented[0, 10:20, 10:20] = 200
    segmented[0, 50:60, 50:60] = 200
    got = input_measures(model_inputs(np.stack([flat, noisy, smooth]), segmented), PREP)
    assert got["blur"][0] == pytest.approx(0.0, abs=1e-3)
    assert got["blur"][1] > 50 * got["blur"][2] > 0
    np.testing.assert_allclose(got["colour"][0], [200, 150, 220, 70], atol=0.01)
    rows = size - PREP.blank_rows(size)
    np.testing.assert_allclose(got["colour"][1, :3], noisy[:rows].reshape(-1, 3).mean(axis=0), rtol=1e-4)
    pixels = noisy[:rows].astype(np.float64)  # the measures in pixel units, computed independently
    laplacian = ndimage.convolve(pixels @ np.array([0.299, 0.587, 0.114]), np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]]))
    assert got["blur"][1] == pytest.approx(laplacian[1:-1, 1:-1].var(), rel=1e-4)
    assert got["colour"][1, 3] == pytest.approx((pixels.max(axis=2) - pixels.min(axis=2)).mean(), rel=1e-4)
    assert got["components"].tolist() == [2, 0, 0]


def _circular_hue(rgb: np.ndarray) -> float:
    """Hue in degrees of one colour's chroma-plane vector, computed independently of the measure."""
    r, g, b = (float(v) for v in rgb)
    return float(np.degrees(np.arctan2(np.sqrt(3.0) / 2.0 * (g - b), r - (g + b) / 2.0)) % 360.0)


def test_stain_hue_is_the_hue_of_the_stained_pixels_only() -> None:
    size = PREP.size
    rows = size - PREP.blank_rows(size)
    primaries = [(255, 0, 0), (255, 255, 0), (0, 255, 0), (0, 255, 255), (0, 0, 255), (255, 0, 255)]
    flats = [np.full((size, size, 3), colour, dtype=np.uint8) for colour in primaries]
    violet, background = (130, 90, 220), (235, 240, 205)  # a blast stain on a yellowish background (chroma 35)
    smear = np.full((size, size, 3), background, dtype=np.uint8)
    smear[20:60, 20:60] = violet
    smear[rows:] = (0, 200, 0)  # the band (blanked in real inputs) is left out: green would move the hue
    grey = np.full((size, size, 3), 128, dtype=np.uint8)
    pale = np.full((size, size, 3), background, dtype=np.uint8)  # chroma 35 <= STAIN_CHROMA: nothing stained
    originals = np.stack([*flats, smear, grey, pale])
    got = input_measures(model_inputs(originals, np.zeros_like(originals)), PREP)["stain_hue"]
    assert got.dtype == np.float32 and got.shape == (len(originals),)
    assert ((got[:6] >= 0) & (got[:6] < 360)).all()
    # the HSV hue at the primaries and secondaries, up to a turn (0 and 360 are the same hue)
    turn = np.mod(got[:6] - np.array([0, 60, 120, 180, 240, 300]) + 180.0, 360.0) - 180.0
    np.testing.assert_allclose(turn, 0.0, atol=0.01)
    assert got[6] == pytest.approx(_circular_hue(np.array(violet)), abs=0.01)  # the background does not count
    assert np.isnan(got[7]) and np.isnan(got[8])


def test_stain_hue_follows_a_hue_rotation_and_ignores_brightness() -> None:
    rng = np.random.default_rng(6)
    size = PREP.size
    base = np.full((size, size, 3), (225, 222, 235), dtype=np.uint8)
    for y, x in rng.integers(10, size - 60, (12, 2)):
        base[y : y + 20, x : x + 20] = (120 + rng.integers(-10, 10), 80, 210)  # violet blobs
    hsv = np.asarray(Image.fromarray(base).convert("HSV")).copy()
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + 64) % 256).astype(np.uint8)  # 90 degrees, as tests/ood_factory.py
    rotated = np.asarray(Image.fromarray(hsv, mode="HSV").convert("RGB"))
    darker = (base.astype(np.float32) * 0.9).round().astype(np.uint8)
    originals = np.stack([base, rotated, darker])
    got = input_measures(model_inputs(originals, np.zeros_like(originals)), PREP)["stain_hue"]
    assert 250 < got[0] < 270
    assert (got[1] - got[0]) % 360.0 == pytest.approx(90.0, abs=3.0)  # Pillow's 8-bit HSV rounds a little
    assert got[2] == pytest.approx(got[0], abs=1.0)


def test_mahalanobis_equals_the_explicit_ppca_covariance() -> None:
    rng = np.random.default_rng(3)
    f, k, c = 12, 4, 3
    basis = np.linalg.qr(rng.normal(size=(f, k)))[0].T.astype(np.float32)  # (K, F) orthonormal rows
    variances = np.array([0.5, 0.2, 0.1, 0.05], dtype=np.float32)
    residual = 0.01
    means = rng.normal(size=(c, f)).astype(np.float32)
    features = rng.normal(size=(7, f)).astype(np.float32) * rng.uniform(0.5, 3, size=(7, 1)).astype(np.float32)
    got = mahalanobis_distance(features, means, basis, variances, residual)
    cov = basis.T.astype(np.float64) @ np.diag(variances) @ basis + residual * (np.eye(f) - basis.T @ basis.astype(np.float64))
    inv = np.linalg.inv(cov)
    z = features / np.linalg.norm(features, axis=1, keepdims=True)
    d2 = np.array([[(zi - m) @ inv @ (zi - m) for m in means] for zi in z])
    np.testing.assert_allclose(got, np.sqrt(d2.min(axis=1)), rtol=1e-3)


def test_rules_fire_on_their_side_and_never_on_nan() -> None:
    rules = (
        Rule(QcFlag.BLURRED, "blur", "below", 10.0, "p1"),
        Rule(QcFlag.OUTLIER, "distance", "above", 5.0, "p99"),
        Rule(QcFlag.SMALL, "min_side", "below", 100.0, "p0.1 x 0.5"),  # measure absent: never fires
    )
    scalars = {"blur": np.array([5.0, 20.0, np.nan, 5.0]), "distance": np.array([1.0, 9.0, np.nan, 6.0])}
    flags = apply_rules(scalars, rules, 4)
    assert flags.dtype == np.uint16
    assert flags.tolist() == [int(QcFlag.BLURRED), int(QcFlag.OUTLIER), 0, int(QcFlag.BLURRED | QcFlag.OUTLIER)]
    assert [reason(int(v)) for v in flags] == ["blurred", "outlier", "ok", "blurred"]
    assert flag_words(int(flags[3])) == ["blurred", "outlier"]


def test_flag_bits_are_stable() -> None:
    assert QcFlag.bits_attr() == "0=blurred,1=colour,2=segmentation,3=components,4=small,5=outlier,6=energy,7=uncertain"


def test_arrays_round_trip_through_the_manifest_encoding() -> None:
    array = np.random.default_rng(4).normal(size=(3, 5)).astype(np.float32)
    np.testing.assert_array_equal(decode_array(encode_array(array, "float32")), array)
    np.testing.assert_allclose(decode_array(encode_array(array, "float16")), array, rtol=1e-3)


def test_fit_refuses_outputs_collected_without_the_stain_hue() -> None:
    """A --cache written before the stain hue existed lacks it: the fit says so instead of writing rules for it
    without percentiles (which a manifest reader would refuse)."""
    rng = np.random.default_rng(7)
    n = 40
    measures = {
        "blur": rng.random(n).astype(np.float32),
        "colour": rng.random((n, 4)).astype(np.float32),
        "components": np.ones(n, np.int32),
        **confidence_measures(rng.normal(size=(n, 4)).astype(np.float32)),
    }
    names = [f"x/{i:03d}.jpg" for i in range(n)]
    features = rng.normal(size=(n, 8)).astype(np.float32)
    collected = Collected(
        names,
        features,
        np.zeros((n, 4), np.float32),
        np.zeros((n, 4), np.float32),
        np.ones(n, np.float32) / 10,
        np.full((n, 2), 224, np.int32),
        measures,
    )
    with pytest.raises(ValueError, match="stain_hue"):
        fit_qc(collected, np.arange(n) % 4, 4, {}, k=2)
