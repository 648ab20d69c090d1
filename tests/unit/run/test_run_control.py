"""Stopping a run (Ctrl-C, SIGTERM, a stop event), chunked inference and the progress a lab sees."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
from image_factory import write_good_images

from allbatch.cli.progress import PlainProgress, format_duration, progress_line
from allbatch.core.records import EncodedImage, PreparedBatch
from allbatch.core.status import ImageStatus
from allbatch.results.reader import incomplete_run_warning, read_results, results_state
from allbatch.run.config import RunConfig, RunProgress
from allbatch.run.engine import FIRST_CHUNK, next_chunk_size, run, slice_batch


def cpu_config(root: Path, out: Path, model: Path, **kwargs: object) -> RunConfig:
    return RunConfig(source=root, output=out, model=model, backend="onnxruntime", decoder="cpu", **kwargs)  # type: ignore[arg-type]


def test_a_stop_after_the_first_chunk_commits_it_and_resume_finishes(tmp_path: Path, tiny_model: Path) -> None:
    root, out = tmp_path / "slides", tmp_path / "r.h5"
    write_good_images(root, 40)
    stop = threading.Event()
    seen: list[RunProgress] = []

    def on_progress(p: RunProgress) -> None:
        seen.append(p)
        stop.set()  # as the signal handler does

    summary = run(cpu_config(root, out, tiny_model, batch_size=32), on_progress, stop)
    assert summary.interrupted and summary.processed == FIRST_CHUNK == seen[-1].processed
    state = results_state(out)
    assert state.n_committed == FIRST_CHUNK and not state.finished  # working layout: resumable, flagged incomplete
    assert "did not finish" in (incomplete_run_warning(out) or "")

    resumed = run(cpu_config(root, out, tiny_model, batch_size=32, mode="resume"))
    assert not resumed.interrupted and (resumed.processed, resumed.skipped) == (40 - FIRST_CHUNK, FIRST_CHUNK)
    assert sum(resumed.class_counts.values()) == 40  # skipped images' classes are counted too
    table = read_results(out)
    assert len(table) == 40 and (table.status == ImageStatus.OK).all()
    assert results_state(out).finished and incomplete_run_warning(out) is None


def _wait_for(proc: subprocess.Popen[str], text: str) -> str:
    seen = ""
    assert proc.stderr is not None
    for line in proc.stderr:
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"{text!r} never appeared:\n{seen}")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_cli_cleanly_with_a_message(tmp_path: Path, tiny_model: Path, sig: signal.Signals, code: int) -> None:
    root, out = tmp_path / "slides", tmp_path / "r.h5"
    write_good_images(root, 300)
    args = [sys.executable, "-m", "allbatch", "run", str(root), "--out", str(out), "--model", str(tiny_model)]
    args += ["--backend", "onnxruntime", "--decoder", "cpu", "--batch-size", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        before = _wait_for(proc, "images found under")  # logged once the model is loaded, just before the writer opens
        proc.send_signal(sig)
        rest = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    stderr = before + rest
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted:") and "--resume" in last and sig.name in last
    with h5py.File(out, "r") as f:
        committed = int(f["meta/n_committed"][0])
    assert committed < 300
    done = subprocess.run([*args, "--resume", "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(read_results(out)) == 300


def test_chunk_size_targets_seconds_and_stays_a_power_of_two() -> None:
    assert next_chunk_size(None, 64, 2.0) == FIRST_CHUNK
    assert next_chunk_size(None, 2, 2.0) == 2
    assert next_chunk_size(0.125, 64, 2.0) == 16  # 8 img/s: 16 images in 2 s
    assert next_chunk_size(0.13, 64, 2.0) == 8  # 15 fit: rounded down to 8
    assert next_chunk_size(5.0, 64, 2.0) == 1  # slower than one image per 2 s: one at a time
    assert next_chunk_size(0.001, 64, 2.0) == 64  # a fast device gets whole batches
    assert next_chunk_size(0.5, 64, None) == 64  # the benchmark's sweep: whole batches


def test_slice_batch_keeps_images_inputs_and_fractions_aligned() -> None:
    statuses = [ImageStatus.OK, ImageStatus.DECODE_ERROR, ImageStatus.OK, ImageStatus.OK, ImageStatus.EMPTY, ImageStatus.OK]
    images = [EncodedImage(i, f"{i}.jpg", None, "", status) for i, status in enumerate(statuses)]
    inputs = np.arange(4, dtype=np.float32).reshape(4, 1)  # one row per OK image: positions 0, 2, 3, 5
    batch = PreparedBatch(images=images, inputs=inputs, mask_fraction=np.arange(6, dtype=np.float32))
    part = slice_batch(batch, 1, 4)
    assert [image.relpath for image in part.images] == ["1.jpg", "2.jpg", "3.jpg"]
    assert part.inputs[:, 0].tolist() == [1.0, 2.0] and part.ok_positions == [1, 2]
    assert part.mask_fraction.tolist() == [1.0, 2.0, 3.0]


def test_progress_rate_and_eta_leave_skipped_files_out() -> None:
    p = RunProgress(processed=80, skipped=32, total=272, seconds=10.0)
    assert p.handled == 112 and p.images_per_second == 8.0 and p.eta_seconds == 20.0
    line = progress_line(p)
    assert "112/272" in line and "80 classified at 8.0 img/s" in line and "32 already committed" in line and "ETA 20s" in line
    assert RunProgress(0, 32, 272, 1.0).eta_seconds is None  # only skipped so far: no rate, no ETA yet
    assert (format_duration(None), format_duration(308), format_duration(3720)) == ("-", "5m08s", "1h02m")


def test_plain_progress_logs_once_per_interval_and_the_final_state(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    caplog.set_level("INFO", logger="allbatch.progress")
    with PlainProgress(interval=30.0, clock=lambda: now[0]) as plain:
        for second, done in [(5, 10), (20, 20), (31, 30), (40, 40), (45, 45)]:
            now[0] = float(second)
            plain(RunProgress(done, 0, 100, float(second)))
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2 and lines[0].startswith("progress 30/100") and lines[1].startswith("progress 45/100")
