"""``allbatch run --workers N`` (and the same code path for ``--gpus``): one process per shard, one merged
results.h5 equal to a single run, a killed worker reported and its shard finished by --resume."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_support import allbatch, cpu_run_args
from image_factory import write_bad_files, write_good_images
from rows_support import assert_same_rows
from workers_support import committed_rows, worker_pids

from allbatch.core.errors import UserInputError
from allbatch.input.shard import Shard
from allbatch.run.config import RunConfig
from allbatch.run.local import WorkerSlot, _worker_main, cpu_slots, gpu_slots, parts_folder


def test_slots_from_options(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [(s.shard, s.cuda_visible_devices) for s in gpu_slots("0, 2")] == [(Shard(0, 2), "0"), (Shard(1, 2), "2")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6")
    assert [s.cuda_visible_devices for s in gpu_slots("all")] == ["3", "5", "6"]
    assert [(s.shard, s.cuda_visible_devices) for s in cpu_slots(2)] == [(Shard(0, 2), ""), (Shard(1, 2), "")]
    for bad in ("0,0", "1,,2"):
        with pytest.raises(UserInputError, match="--gpus"):
            gpu_slots(bad)
    with pytest.raises(UserInputError, match="--workers"):
        cpu_slots(0)


def test_worker_sees_only_its_device_and_runs_its_shard(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model: Path) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "unchanged")  # restored after the test
    write_good_images(tmp_path / "in", 5)
    slot = WorkerSlot(Shard(1, 2), "7")
    config = RunConfig(tmp_path / "in", tmp_path / "p.h5", tiny_model, "onnxruntime", "cpu", shard=slot.shard, mode="resume")
    messages: queue.Queue[tuple[object, ...]] = queue.Queue()
    _worker_main(slot, config, messages)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "7"
    sent = [messages.get_nowait() for _ in range(messages.qsize())]
    assert sent[0] == ("progress", 1, 3, 0, 3)  # shard 1/2 of 5 files: rows 2..4, one batch (processed, skipped, total)
    assert sent[-1][0] == "done" and sent[-1][2].processed == 3


def test_workers_equal_a_single_run_row_by_row(tmp_path: Path, tiny_model: Path) -> None:
    """48 files, 2 workers of 24 = 3 batches of 8: each image meets the same batch neighbours as in the
    single run, so every value must be equal bit for bit."""
    root = tmp_path / "slides"
    write_bad_files(root)
    write_good_images(root / "good", 33)
    single, merged = tmp_path / "single.h5", tmp_path / "merged.h5"
    allbatch(*cpu_run_args(root, single, tiny_model, "--batch-size", "8", "--quiet"), check_code=3)
    result = allbatch(*cpu_run_args(root, merged, tiny_model, "--batch-size", "8", "--workers", "2", "--json"), check_code=3)
    assert '"discovered": 48' in result.stdout and '"failed": 6' in result.stdout
    assert_same_rows(merged, single)
    assert not parts_folder(merged).exists()  # parts are removed once merged
    again = allbatch(*cpu_run_args(root, merged, tiny_model, "--workers", "2"), check_code=1)
    assert "already exists" in again.stderr and "Traceback" not in again.stderr


def test_worker_errors_are_reported_per_worker(tmp_path: Path, tiny_model: Path) -> None:
    write_good_images(tmp_path / "in", 4)
    out = tmp_path / "r.h5"
    result = allbatch("run", str(tmp_path / "in"), "--out", str(out), "--model", str(tiny_model), "--backend", "tensorrt", "--workers", "2")
    assert result.returncode == 1, result.stderr
    message = " ".join(result.stderr.split())  # rich wraps lines at the terminal's width
    assert (
        "worker 0 (shard 0/2, CPU) failed: backend tensorrt" in message and "worker 1 (shard 1/2, CPU) failed: backend tensorrt" in message
    )
    assert "Traceback" not in message and not out.exists() and not parts_folder(out).exists()


def test_killed_worker_is_reported_and_resume_finishes_its_shard(tmp_path: Path, tiny_model: Path) -> None:
    root = tmp_path / "slides"
    write_good_images(root, 300)
    common = ("--batch-size", "4", "--quiet")
    single, out = tmp_path / "single.h5", tmp_path / "out.h5"
    allbatch(*cpu_run_args(root, single, tiny_model, *common), check_code=0)
    args = [sys.executable, "-m", "allbatch", *cpu_run_args(root, out, tiny_model, *common, "--workers", "2")]
    proc = subprocess.Popen(args, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part = parts_folder(out) / "part-1-of-2.h5"
    deadline = time.monotonic() + 120
    while committed_rows(part) == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    victims = worker_pids(proc.pid)  # in start order: worker 0, then worker 1
    assert len(victims) == 2 and 0 < committed_rows(part) < 150, victims  # mid-run: some of its 150 rows
    os.kill(victims[1], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr
    message = " ".join(stderr.split())
    assert "worker 1 (shard 1/2, CPU) failed: killed by signal 9" in message and "--resume" in message and "Traceback" not in message
    assert not out.exists() and parts_folder(out).is_dir()
    allbatch(*cpu_run_args(root, out, tiny_model, *common, "--workers", "2", "--resume"), check_code=0)
    assert_same_rows(out, single, by_index=True, float_atol=1e-6)  # the resumed shard's batches were cut differently


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--shard", "0/2", "--workers", "2"), "exclude each other"),
        (("--executor", "ray", "--gpus", "0"), "no --gpus or --shard"),
        (("--executor", "dask"), "unknown --executor"),
        (("--workers", "0"), "--workers must be at least 1"),
    ],
)
def test_executor_options_that_do_not_fit_are_one_line_errors(tmp_path: Path, options: tuple[str, ...], message: str) -> None:
    write_good_images(tmp_path / "in", 1)
    result = allbatch("run", str(tmp_path / "in"), "--out", str(tmp_path / "r.h5"), *options, check_code=1)
    assert message in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
    assert not (tmp_path / "r.h5").exists()


def test_a_stop_reaches_every_worker_and_resume_finishes(tmp_path: Path, tiny_model: Path) -> None:
    """The CLI's stop event (SIGINT/SIGTERM) makes the parent send SIGTERM to each worker, which stops cleanly:
    nothing is merged, the summary says interrupted, and the same command with --resume finishes the run."""
    import threading

    from allbatch.run.local import run_local

    root = tmp_path / "slides"
    write_good_images(root, 16)
    single, out = tmp_path / "single.h5", tmp_path / "r.h5"
    allbatch(*cpu_run_args(root, single, tiny_model, "--batch-size", "4", "--quiet"), check_code=0)
    stop = threading.Event()
    stop.set()  # as the signal handler does, here before the workers have even loaded the model
    config = RunConfig(root, out, tiny_model, "onnxruntime", "cpu", batch_size=4)
    summary = run_local(config, cpu_slots(2), None, stop)
    assert summary.interrupted and not out.exists() and parts_folder(out).is_dir()
    allbatch(*cpu_run_args(root, out, tiny_model, "--batch-size", "4", "--workers", "2", "--resume", "--quiet"), check_code=0)
    assert_same_rows(out, single)
