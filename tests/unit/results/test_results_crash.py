"""Crash safety of the results writer, at the writer level (helpers: results_crash_support.py).

1. SIGKILL a writer subprocess at random moments (5 kills): after each, the file opens with plain
   h5py, rows [0, n_committed) are exactly the expected rows and n_committed never goes back; the
   next run resumes, and the finished file equals an uninterrupted run's.
2. Record every write system call of two writer runs with strace and rebuild the file as it was
   after each single write, and after each page of every multi-page write (a kill can cut a write
   between pages): every one of these crash points must pass the same checks. This covers the
   moments a random kill is unlikely to hit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from paths import REPO
from results_crash_support import Expected, check_committed, run

from allbatch.results.reader import read_results

SUPPORT = REPO / "tests" / "support" / "results_crash_support.py"


def child(out: Path, n: int, seed: int, *extra: str) -> list[str]:
    return [sys.executable, str(SUPPORT), "child", str(out), str(n), str(seed), *extra]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_committed_row(tmp_path: Path) -> None:
    n_images = 40_000  # about 4 s of appends in batches of 1..48 rows here, more than the 5 delays add up to
    expected = Expected(n_images)
    out = tmp_path / "killed.h5"
    seed = int(os.environ.get("ALLBATCH_KILL_SEED", "2024"))  # vary it to stress-test: the kill moments change
    delays = np.random.default_rng(seed).uniform(0.0, 0.7, size=5)
    previous, kills = 0, 0
    for attempt, delay in enumerate(delays):
        proc = subprocess.Popen(child(out, n_images, attempt, "--announce"), env=env(), stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        # Kill `delay` after the writer has opened the file (the rebuild of a resume included), not after
        # the process started: interpreter start-up on a loaded machine must not eat the window.
        # Attempt 0 is killed while it opens, before it announces: a kill inside the first build.
        if attempt > 0:
            assert proc.stdout.readline() == "open\n"
        time.sleep(float(delay))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        proc.stdout.close()
        if not out.exists():  # killed before the file was first installed
            continue
        with h5py.File(out, "r") as f:  # plain h5py, before any repair by the writer
            n = check_committed(f, expected)
        assert n >= previous, f"committed rows went from {previous} to {n}"
        previous = n
    assert kills >= 4, "the runs finished before they were killed: give them more rows"
    assert 0 < previous < n_images
    subprocess.run(child(out, n_images, 99), env=env(), check=True, timeout=120)

    reference = tmp_path / "reference.h5"
    run(reference, n_images, seed=7)
    for path in (out, reference):
        with h5py.File(path, "r") as f:
            assert check_committed(f, expected) == n_images  # every image once, none duplicated
            assert f["images/path"].shape == (n_images,) and f["pred/probs"].compression == "gzip"
    resumed, uninterrupted = read_results(out), read_results(reference)
    for name in ("rows", "paths", "sha256", "status", "errors", "probs", "labels", "mask_fraction"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(uninterrupted, name))
    # every run that got past its open counted itself (a kill during the open's rebuild leaves the old file)
    assert uninterrupted.attrs["runs"] == 1 and 2 <= resumed.attrs["runs"] <= len(delays) + 1
    assert not list(tmp_path.glob(".*allbatch-tmp")), "a killed run's temporary file was not cleaned up"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is needed to record the writer's system calls")
def test_every_crash_point_in_the_write_log_keeps_committed_rows(tmp_path: Path) -> None:
    first, total, redo = 1300, 1400, 3  # crosses a chunk boundary (1024 rows), supersedes, resumes
    out = tmp_path / "replayed.h5"
    strace = ["strace", "-f", "-xx", "-s", "200000000", "-e", "trace=openat,close,pwrite64,ftruncate,rename,renameat,renameat2"]
    logs = []
    for i, command in enumerate([child(out, first, 1, "--sync", "--redo", str(redo)), child(out, total, 2, "--sync")]):
        logs.append(tmp_path / f"strace.{i}")
        result = subprocess.run([*strace, "-o", str(logs[-1]), *command], env=env(), capture_output=True, text=True, timeout=300)
        if result.returncode != 0 and "ptrace" in result.stderr:
            pytest.skip(f"strace cannot trace here: {result.stderr.strip()[:200]}")
        assert result.returncode == 0, result.stderr[-2000:]
    replay = [sys.executable, str(SUPPORT), "replay", str(out), str(first), str(total), str(redo), *map(str, logs)]
    try:
        result = subprocess.run(replay, env=env(), capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("HDF5 hung reading one of the crash states: a corrupt file")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["pwrites"] > 100, "HDF5 wrote without pwrite64: the log is not what the replay parses"
    assert summary["states"] > 500 and summary["final_n"] == total + redo
    expected = Expected(total)
    assert read_results(out).paths.tolist() == expected.paths[redo:first] + expected.paths[:redo] + expected.paths[first:]
