"""What the report shows a lab (issue 23, point 6): a lowest-confidence list below a stated confidence, and the run
that classified the images even after a resume that had nothing to do."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from image_factory import encode, smear_like
from typer.testing import CliRunner

from allbatch.cli import app as cli_app
from allbatch.core.status import ImageStatus
from allbatch.report.content import gather
from allbatch.report.html import write_report
from allbatch.results.reader import read_results
from allbatch.results.rows import ResultRows
from allbatch.results.writer import ResultsWriter

CONFIDENCES = [0.99, 0.95, 0.91, 0.85, 0.60]


def _rows(confidences: list[float]) -> ResultRows:
    n = len(confidences)
    probs = np.array([[c, (1 - c) / 3, (1 - c) / 3, (1 - c) / 3] for c in confidences], dtype=np.float32)
    paths = [f"P01/img{i}.jpg" for i in range(n)]
    return ResultRows(
        paths=paths,
        sha256=[hashlib.sha256(p.encode()).hexdigest() for p in paths],
        status=np.full(n, int(ImageStatus.OK), dtype=np.int8),
        errors=[""] * n,
        probs=probs,
        labels=np.zeros(n, dtype=np.int8),
        mask_fraction=np.full(n, 0.05, dtype=np.float32),
        qc={"flags": np.zeros(n, dtype=np.uint16), "max_prob": probs.max(axis=1)},
    )


def test_the_lowest_confidence_list_holds_only_images_below_the_stated_confidence(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    with ResultsWriter.open(out, mode="new", provenance={"input_root": str(tmp_path)}, compat={}) as writer:
        writer.append(_rows(CONFIDENCES))
    content, _ = write_report(out, tmp_path / "r.html")
    assert [card.path for card in content.low_confidence] == ["P01/img4.jpg", "P01/img3.jpg"]  # 0.60, 0.85; not 0.91
    assert content.n_low_confidence == 2
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Unflagged images with confidence below 0.90 (2)" in page
    assert not gather(out, thumbnails=False, low_confidence_below=0.5).low_confidence


def test_a_resume_with_nothing_new_keeps_the_run_that_classified_the_images(tmp_path: Path, tiny_model: Path) -> None:
    root = tmp_path / "archive" / "P01"
    root.mkdir(parents=True)
    for i in range(3):
        (root / f"img{i}.jpg").write_bytes(encode(smear_like(i), "JPEG", quality=92))
    out = tmp_path / "r.h5"
    common = ["--model", str(tiny_model), "--backend", "onnxruntime", "--decoder", "cpu", "-q"]
    cli_app._register()
    first = CliRunner().invoke(cli_app.app, ["run", str(root.parent), "--out", str(out), "-b", "2", *common])
    assert first.exit_code == 0, first.output
    before = read_results(out).attrs
    again = CliRunner().invoke(cli_app.app, ["run", str(root.parent), "--out", str(out), "--resume", *common])
    assert again.exit_code == 0, again.output
    after = read_results(out).attrs
    for key in ("argv", "run_started_utc", "updated_utc", "runs", "run_history", "batch_size"):
        assert after[key] == before[key], key  # the resume classified nothing: it is not the file's latest run
    content = gather(out, thumbnails=False)
    assert dict(content.provenance)["run started (UTC)"] == str(before["run_started_utc"])
    assert "3 images in" in content.throughput and len(content.run_history) == 1
    # a resume that does classify something becomes the latest run
    (root / "img3.jpg").write_bytes(encode(smear_like(3), "JPEG", quality=92))
    assert CliRunner().invoke(cli_app.app, ["run", str(root.parent), "--out", str(out), "--resume", *common]).exit_code == 0
    latest = read_results(out).attrs
    assert latest["runs"] == 2 and latest["batch_size"] == 64
    assert [(run["mode"], run["committed_before"]) for run in latest["run_history"]] == [("new", 0), ("resume", 3)]
