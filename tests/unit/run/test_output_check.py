"""Every inference output is checked (issue 24, point 2): a model whose outputs are not results is refused before
anything is written; an image whose output fails mid-run (an overflow) is stored as failed with the reason.

The models are real ONNX files built with onnx.helper (tests/support/graph_models.py), run through `allbatch run`.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_support import allbatch, cpu_run_args
from graph_models import write_graph_model
from paths import DEMO
from PIL import Image

from allbatch.backends.base import InferenceOutput
from allbatch.backends.output_check import PROB_SUM_TOLERANCE, output_faults
from allbatch.core.records import EncodedImage, PreparedBatch
from allbatch.core.status import ImageStatus
from allbatch.qc.schema import empty_qc
from allbatch.results.reader import read_results
from allbatch.run.config import RunConfig
from allbatch.run.engine import rows_for

BRIGHT_THRESHOLD = -0.015
"""Image mean (after normalisation) above which the threshold model's outputs are NaN: the shipped images lie
between -0.17 and -0.03, a white image at 0.0."""


def _folder_with_a_white_image(root: Path) -> Path:
    """Two shipped images and one white PNG (the image the threshold model overflows on)."""
    root.mkdir()
    shutil.copy(DEMO / "Benign" / "WBC-Benign-001.jpg", root / "a.jpg")
    shutil.copy(DEMO / "Pro" / "WBC-Malignant-Pro-151.jpg", root / "c.jpg")
    Image.new("RGB", (64, 64), (255, 255, 255)).save(root / "b_white.png")
    return root


@pytest.mark.parametrize(
    ("probs", "why"),
    [([math.nan] * 4, "probabilities are not finite"), ([-5.0, 10.0, 3.0, 2.0], r"probabilities outside \[0, 1\]")],
    ids=["nan", "not_probabilities"],
)
def test_a_model_whose_outputs_are_not_results_is_refused_before_anything_is_written(tmp_path: Path, probs: list[float], why: str) -> None:
    model = write_graph_model(tmp_path / "model.onnx", probs=probs)
    out = tmp_path / "out" / "r.h5"
    out.parent.mkdir()
    result = allbatch(*cpu_run_args(DEMO, out, model, "--quiet"))
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "images shipped with allbatch" in errors[0] and "nothing written" in errors[0]
    assert re.search(why, errors[0]), errors[0]
    assert list(out.parent.iterdir()) == []  # no results file, no temporary file, no lock


def test_a_model_with_symbolic_output_widths_that_returns_the_wrong_width_is_one_line(tmp_path: Path) -> None:
    """Symbolic widths pass the static fit check (point 9); the start-up check sees the real width: one line, no file."""
    model = write_graph_model(tmp_path / "model.onnx", probs_width=3, symbolic_widths=True)
    out = tmp_path / "out" / "r.h5"
    out.parent.mkdir()
    result = allbatch(*cpu_run_args(DEMO, out, model, "--quiet"))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "returned probs/logits of shape (4, 3)" in result.stderr
    assert list(out.parent.iterdir()) == []


def test_an_overflow_mid_run_is_a_failed_row_with_its_reason_and_resume_redoes_it(tmp_path: Path) -> None:
    model = write_graph_model(tmp_path / "model.onnx", threshold=BRIGHT_THRESHOLD)
    root = _folder_with_a_white_image(tmp_path / "src")
    out = tmp_path / "r.h5"
    summary = json.loads(allbatch(*cpu_run_args(root, out, model, "--quiet", "--json"), check_code=3).stdout)
    assert (summary["ok"], summary["failed"]) == (2, 1)
    table = read_results(out)
    row = list(table.paths).index("b_white.png")
    assert table.status[row] == ImageStatus.MODEL_OUTPUT_ERROR
    assert table.errors[row].startswith("invalid model output: probabilities are not finite")
    assert table.labels[row] == -1 and np.isnan(table.probs[row]).all() and table.flags[row] == 0
    assert (table.status[[i for i in range(3) if i != row]] == ImageStatus.OK).all()
    csv_path = tmp_path / "r.csv"
    allbatch("export", str(out), "--csv", str(csv_path), check_code=0)
    assert ",model_output_error,invalid model output" in csv_path.read_text(encoding="utf-8")
    resumed = json.loads(allbatch(*cpu_run_args(root, out, model, "--resume", "--quiet", "--json"), check_code=3).stdout)
    assert (resumed["processed"], resumed["skipped"]) == (1, 2)  # the failed output is retried, the rest kept


def test_ray_actors_check_their_outputs_the_same_way(tmp_path: Path) -> None:
    """RowsActor (what Ray runs per batch), called without Ray: the white image's row is failed, not ok."""
    from allbatch.run.ray_data import RowsActor

    model = write_graph_model(tmp_path / "model.onnx", threshold=BRIGHT_THRESHOLD)
    root = _folder_with_a_white_image(tmp_path / "src")
    names = ["a.jpg", "b_white.png", "c.jpg"]
    actor = RowsActor(RunConfig(root, tmp_path / "r.h5", model=model, backend="onnxruntime", decoder="cpu"), "onnxruntime", "cpu")
    try:
        columns = actor(
            {
                "index": np.arange(3, dtype=np.int64),
                "path": np.array([str(root / name) for name in names], dtype=object),
                "relpath": np.array(names, dtype=object),
                "problem": np.array([""] * 3, dtype=object),
                "committed_sha256": np.array([""] * 3, dtype=object),
                "committed_status": np.full(3, -1, dtype=np.int64),
            }
        )
    finally:
        actor.__del__()
    assert columns["status"].tolist() == [ImageStatus.OK, ImageStatus.MODEL_OUTPUT_ERROR, ImageStatus.OK]
    assert str(columns["errors"][1]).startswith("invalid model output")


def _output(probs: list[list[float]], features: float = 0.5) -> InferenceOutput:
    p = np.asarray(probs, dtype=np.float32)
    return InferenceOutput(p, np.log(np.clip(p, 1e-6, None)).astype(np.float32), np.full((len(p), 3), features, np.float32))


def test_output_faults_accept_reduced_precision_softmax_and_name_each_fault() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (256, 4))
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for dtype in (np.float16, np.float32):  # an fp16 engine's probabilities, rounded, still pass
        assert not any(output_faults(_output(softmax.astype(dtype).astype(np.float32).tolist())))
    faults = output_faults(_output([[0.25] * 4, [math.nan, 0.5, 0.25, 0.25], [-5, 10, 3, 2], [0.5, 0.5, 0.5, 0.5], [math.inf, 0, 0, 0]]))
    assert faults[0] == ""
    assert "not finite" in faults[1] and "not finite" in faults[4]
    assert "outside [0, 1]" in faults[2]
    assert f"sum to 2, not 1 within {PROB_SUM_TOLERANCE}" in faults[3]
    assert "features are not finite" in output_faults(_output([[0.25] * 4], features=math.inf))[0]


def test_rows_for_marks_only_the_faulty_rows_and_clears_their_qc() -> None:
    images = [EncodedImage(i, f"{i}.jpg", b"x", "0" * 64) for i in range(3)]
    images[1].status, images[1].error = ImageStatus.DECODE_ERROR, "not an image"
    batch = PreparedBatch(images, np.zeros((2, 1)), np.full(3, 0.5, np.float32))
    qc = {key: np.ones_like(column) for key, column in empty_qc(3).items()}
    rows = rows_for(batch, _output([[0.1, 0.2, 0.3, 0.4], [math.nan] * 4]), qc)
    assert rows.status.tolist() == [ImageStatus.OK, ImageStatus.DECODE_ERROR, ImageStatus.MODEL_OUTPUT_ERROR]
    assert rows.errors[1] == "not an image" and rows.errors[2].startswith("invalid model output")
    assert rows.labels.tolist() == [3, -1, -1] and np.isnan(rows.probs[2]).all()
    fill = empty_qc(1)
    for key, column in rows.qc.items():
        np.testing.assert_array_equal(column[2], fill[key][0])
        np.testing.assert_array_equal(column[0], np.ones_like(fill[key][0]))
