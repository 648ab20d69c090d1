"""The pipeline's serial mode and its stage timer: the same rows as the threaded job, every stage timed with
the images it handled, failures included; timing off by default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from image_factory import write_bad_files, write_good_images

from allbatch.core.stage_timer import STAGES, StageTimer
from allbatch.results.reader import read_results
from allbatch.run.config import RunConfig
from allbatch.run.engine import run


def config(source: Path, output: Path, model: Path, *, serial: bool) -> RunConfig:
    return RunConfig(source=source, output=output, model=model, backend="onnxruntime", decoder="cpu", batch_size=4, serial=serial)


def test_serial_mode_writes_the_same_rows_and_times_every_stage(tmp_path: Path, tiny_model: Path) -> None:
    source = tmp_path / "in"
    write_good_images(source, 6)
    bad = write_bad_files(source)
    threaded = run(config(source, tmp_path / "threaded.h5", tiny_model, serial=False))
    timer = StageTimer()
    serial = run(config(source, tmp_path / "serial.h5", tiny_model, serial=True), timer=timer)

    a, b = read_results(tmp_path / "threaded.h5"), read_results(tmp_path / "serial.h5")
    assert list(a.paths) == list(b.paths) and np.array_equal(a.status, b.status)
    np.testing.assert_array_equal(a.probs, b.probs)  # same backend, same batches: identical
    assert (serial.processed, serial.ok, serial.failed) == (threaded.processed, threaded.ok, threaded.failed)

    n = 6 + len(bad)
    timings = timer.to_dict()
    assert list(timings) == list(STAGES)
    assert timings["read"]["images"] == n and timings["prepare"]["images"] == n and timings["write"]["images"] == n
    assert timings["infer"]["images"] == timings["qc"]["images"] == serial.ok < n  # only decoded images reach the network
    assert all(timings[stage]["seconds"] > 0 for stage in STAGES)


def test_threaded_run_reports_into_the_timer_from_its_threads(tmp_path: Path, tiny_model: Path) -> None:
    source = tmp_path / "in"
    write_good_images(source, 5)
    timer = StageTimer()
    summary = run(config(source, tmp_path / "out.h5", tiny_model, serial=False), timer=timer)
    assert summary.ok == 5
    assert {stage: timer.images[stage] for stage in STAGES} == {"read": 5, "prepare": 5, "infer": 5, "qc": 5, "write": 5}
