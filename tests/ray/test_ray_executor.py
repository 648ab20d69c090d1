"""``--executor ray`` on a local Ray cluster started here (2 CPUs, no dashboard) with the tiny model: the same
rows as a single run, resume skips committed rows, and an actor process killed mid-run loses and
duplicates nothing."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import h5py
import psutil
import pytest
from cli_support import allbatch, cpu_run_args
from image_factory import write_bad_files, write_good_images
from rows_support import assert_same_rows

from allbatch.results.schema import N_COMMITTED
from allbatch.run.config import RunConfig, RunProgress

ray = pytest.importorskip("ray", reason="the Ray executor needs the ray extra (pip install -e '.[ray]')")
pytest.importorskip("ray.data", reason="the Ray executor needs Ray Data (pip install -e '.[ray]')")

from allbatch.run.ray_data import run_ray  # noqa: E402 - after the skip

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ACTOR_PROCESS = "MapBatches(RowsActor)"
"""What Ray puts in an actor process's title (``ray::MapWorker(MapBatches(RowsActor))``)."""


@pytest.fixture(scope="module", autouse=True)
def local_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


def _config(root: Path, out: Path, model: Path, batch_size: int, mode: str = "new") -> RunConfig:
    return RunConfig(root, out, model, "onnxruntime", "cpu", batch_size=batch_size, mode=mode)  # type: ignore[arg-type]


def test_ray_rows_equal_a_single_run_and_resume_skips(tmp_path: Path, tiny_model: Path) -> None:
    root = tmp_path / "slides"
    write_bad_files(root)
    write_good_images(root / "good", 33)
    single, out = tmp_path / "single.h5", tmp_path / "ray.h5"
    allbatch(*cpu_run_args(root, single, tiny_model, "--batch-size", "8", "--quiet"), check_code=3)
    summary = run_ray(_config(root, out, tiny_model, 8))
    assert (summary.discovered, summary.processed, summary.failed) == (48, 48, 6)
    assert_same_rows(out, single, by_index=True, float_atol=1e-6)  # Ray cuts batches differently
    with h5py.File(out, "r") as f:
        assert '"name": "ray"' in f.attrs["executor"] and f.attrs["backend"] == "onnxruntime"
    resumed = run_ray(_config(root, out, tiny_model, 8, mode="resume"))
    assert (resumed.processed, resumed.skipped, resumed.failed) == (1, 47, 6)  # only the unreadable file is retried
    assert_same_rows(out, single, by_index=True, float_atol=1e-6)


def _actor_pids() -> list[int]:
    pids = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if ACTOR_PROCESS in " ".join(process.info["cmdline"] or []):
            pids.append(process.info["pid"])
    return pids


def test_killed_actor_loses_and_duplicates_nothing(tmp_path: Path, tiny_model: Path) -> None:
    root = tmp_path / "slides"
    write_good_images(root, 96)
    single, out = tmp_path / "single.h5", tmp_path / "ray.h5"
    allbatch(*cpu_run_args(root, single, tiny_model, "--batch-size", "4", "--quiet"), check_code=0)
    killed: list[int] = []

    def kill_one_actor_after_first_rows(progress: RunProgress) -> None:
        if progress.handled > 0 and not killed and progress.handled < progress.total:
            pids = _actor_pids()
            assert pids, "no Ray actor process found"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    summary = run_ray(_config(root, out, tiny_model, 4), progress=kill_one_actor_after_first_rows)
    assert killed, "the run finished before an actor could be killed"
    assert summary.processed == 96 and summary.failed == 0
    with h5py.File(out, "r") as f:
        assert int(f[N_COMMITTED][0]) == 96  # no row duplicated
    assert_same_rows(out, single, by_index=True, float_atol=1e-6)  # and none lost
