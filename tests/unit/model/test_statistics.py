"""The hybrid head's in-graph statistics (allbatch.model.statistics) equal a NumPy reference on real images, and the
exported ONNX graph computes the same numbers as torch (so every backend does)."""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the statistics module is torch")

from paths import DEMO  # noqa: E402

from allbatch.model.manifest import load_model_artifact  # noqa: E402 - after the importorskip
from allbatch.model.statistics import HISTOGRAM_BINS, HISTOGRAM_STRIDE, LUMA, TEXTURE_SCALES, ImageStatistics, statistic_names  # noqa: E402
from allbatch.prepare.recipe import prepare_files  # noqa: E402
from allbatch.qc.measures import unblanked_rows  # noqa: E402


def _reference(inputs: np.ndarray, mean: float, std: float, rows: int) -> np.ndarray:
    """The statistics of one (2, 3, S, S) input, written plainly in float64 NumPy from the definitions."""
    p = inputs.astype(np.float64) * std + mean
    image, seg = p[0, :, :rows, :], p[1]
    cell = seg.max(axis=0) > 0.5 / 255.0

    def moments(values: np.ndarray, where: np.ndarray) -> tuple[list[float], list[float]]:
        picked = [values[c][where] for c in range(3)]
        return [float(v.mean()) if v.size else 0.0 for v in picked], [float(np.sqrt(v.var() + 1e-6)) if v.size else 1e-3 for v in picked]

    def histogram(values: np.ndarray, where: np.ndarray) -> list[float]:
        values, where = values[:, ::HISTOGRAM_STRIDE, ::HISTOGRAM_STRIDE], where[::HISTOGRAM_STRIDE, ::HISTOGRAM_STRIDE]
        out = []
        for c in range(3):
            v = values[c][where]
            for k in range(HISTOGRAM_BINS):
                centre = k / (HISTOGRAM_BINS - 1)
                out.append(float(np.clip(1 - np.abs(v - centre) * (HISTOGRAM_BINS - 1), 0, None).sum() / (v.size + 1e-6)))
        return out

    def gradients(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        gx = np.abs(grey[1:-1, 2:] - grey[1:-1, :-2])
        gy = np.abs(grey[2:, 1:-1] - grey[:-2, 1:-1])
        lap = np.abs(grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * grey[1:-1, 1:-1])
        return gx, gy, lap

    everywhere = np.ones(image.shape[1:], dtype=bool)
    image_mean, image_std = moments(image, everywhere)
    chroma = float((image.max(0) - image.min(0)).mean())
    stats = [*image_mean, *image_std, chroma, image_mean[2] - image_mean[1], image_mean[0] - image_mean[1]]
    stats += histogram(image, everywhere)
    cell_mean, cell_std = moments(p[0], cell)
    seg_mean, seg_std = moments(seg, cell)
    stats += [float(cell.mean()), *cell_mean, *cell_std, *seg_mean, *seg_std, *histogram(p[0], cell), *histogram(seg, cell)]
    grey = np.tensordot(np.array(LUMA), image, axes=1)
    stats += [float(g.mean()) for g in gradients(grey)]
    cell_grey = np.tensordot(np.array(LUMA), p[0], axes=1)
    inner = cell[1:-1, 1:-1]
    stats += [float(g[inner].sum() / (inner.sum() + 1e-6)) for g in gradients(cell_grey)]
    for s in TEXTURE_SCALES:
        h, w = grey.shape[0] // s, grey.shape[1] // s
        stats.append(float(grey[: h * s, : w * s].reshape(h, s, w, s).mean(axis=(1, 3)).std(ddof=1)))
    m = cell.astype(np.float64)
    stats.append(float(np.abs(np.diff(m, axis=1)).mean() + np.abs(np.diff(m, axis=0)).mean()))
    centred = grey - grey.mean()
    stats.append(float((centred[:, 1:] * centred[:, :-1]).mean() / ((centred**2).mean() + 1e-6)))
    return np.array(stats)


@pytest.fixture(scope="module")
def demo_inputs() -> tuple[np.ndarray, ImageStatistics]:
    manifest = load_model_artifact().manifest
    paths = sorted(DEMO.glob("*/*.jpg"))[::2]  # one image per class
    module = ImageStatistics(manifest.prep.mean, manifest.prep.std, unblanked_rows(manifest.prep)).eval()
    return prepare_files(paths, manifest.prep, manifest.seg), module


def test_statistics_equal_a_numpy_reference_on_real_images(demo_inputs: tuple[np.ndarray, ImageStatistics]) -> None:
    inputs, module = demo_inputs
    with torch.no_grad():
        got = module(torch.from_numpy(inputs)).numpy()
    assert got.shape == (len(inputs), len(statistic_names()))
    for row, one in zip(got, inputs, strict=True):
        expected = _reference(one, module.mean, module.std, module.rows)
        np.testing.assert_allclose(row, expected, rtol=2e-3, atol=2e-5)
    assert np.ptp(got, axis=0).max() > 0.05  # the images differ: the statistics are not a constant


def test_exported_statistics_graph_matches_torch(demo_inputs: tuple[np.ndarray, ImageStatistics]) -> None:
    ort = pytest.importorskip("onnxruntime")
    inputs, module = demo_inputs
    buffer = io.BytesIO()
    torch.onnx.export(
        module, (torch.from_numpy(inputs),), buffer, input_names=["images"], output_names=["statistics"],
        dynamic_axes={"images": {0: "N"}, "statistics": {0: "N"}}, opset_version=18, dynamo=False,
    )  # fmt: skip
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"images": inputs})
    with torch.no_grad():
        torch_out = module(torch.from_numpy(inputs)).numpy()
    np.testing.assert_allclose(onnx_out, torch_out, rtol=1e-4, atol=2e-5)  # float32 summation order differs
