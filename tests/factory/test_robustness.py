"""The robustness suite on the tiny model and the demo images (ONNX Runtime, real preparation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from paths import REPO

from allbatch import CLASS_NAMES
from allbatch.backends.ort_backend import OnnxRuntimeBackend
from allbatch.model.manifest import load_model_artifact
from factory.robustness import PERTURBATIONS, run_suite

pytest.importorskip("cv2", reason="perturbations need OpenCV (robust extra)")
DEMO = REPO / "allbatch" / "demo"


def test_the_suite_is_exactly_the_issue_list() -> None:
    assert list(PERTURBATIONS) == [
        "hue_+3",
        "hue_-3",
        "saturation_x0.8",
        "saturation_x1.2",
        "brightness_x0.9",
        "brightness_x1.1",
        "gamma_0.8",
        "gamma_1.25",
        "jpeg_q70",
        "blur_sigma1",
        "upscale_x2_jpeg90",
        "downscale_x0.75",
    ]


def test_suite_on_demo_images(tiny_model: Path) -> None:
    artifact = load_model_artifact(tiny_model)
    paths = sorted(DEMO.glob("*/*.jpg"))
    labels = np.array([CLASS_NAMES.index(path.parent.name) for path in paths])
    progress: list[int] = []
    with OnnxRuntimeBackend(artifact, threads=1) as backend:
        report = run_suite(
            paths,
            labels,
            backend.infer,
            artifact.manifest.prep,
            artifact.manifest.seg,
            names=["gamma_1.25", "upscale_x2_jpeg90"],
            batch_size=4,
            stride=2,
            progress=lambda r: progress.append(len(r.conditions)),
        )
    names = [c.name for c in report.conditions]
    assert names == ["plain", "plain_every_2", "gamma_1.25", "upscale_x2_jpeg90"]
    assert progress == [2, 3, 4]
    assert report.conditions[0].n == 8 and all(c.n == 4 for c in report.conditions[1:])
    base = report.conditions[1].accuracy
    for condition in report.conditions[2:]:
        assert condition.drop_points == pytest.approx(100 * (base - condition.accuracy))
        assert np.array(condition.confusion).sum() == 4
    assert report.plain_logits.shape == (8, 4)
    assert report.worst_drop_points == max(c.drop_points for c in report.conditions[2:])
    table = report.markdown_table()
    assert table.count("\n") == 5 and "upscale_x2_jpeg90" in table
    assert report.to_dict()["conditions"]["gamma_1.25"]["n"] == 4
    with pytest.raises(KeyError, match="unknown perturbation"):
        run_suite(paths, labels, backend.infer, artifact.manifest.prep, artifact.manifest.seg, names=["sepia"])
