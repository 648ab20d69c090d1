"""``--workers`` runs are as safe as one process (issue 24): a second run on a locked output is refused and
touches nothing of the first; a results file another writer put in place meanwhile is never replaced; workers
stop within seconds of their parent's death (even with their progress queue full), and a refusal caused by
such a worker names it.

The runs are frozen with SIGSTOP at the moment a test needs them mid-run, so nothing here depends on speed."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from cli_support import allbatch, cpu_run_args
from image_factory import write_good_images
from rows_support import assert_same_rows
from workers_support import committed_rows, worker_pids

from allbatch.run.local import parts_folder

IMAGES = 300
"""150 rows per worker at batch size 4: many commits, so that a run caught after its first one is mid-run."""
COMMON = ("--batch-size", "4", "--quiet")
GONE_WITHIN_S = 20.0
"""How long a worker may take to stop after its parent died: one chunk of 4 images and its commit (a 2-core
machine shared with other jobs); a worker that runs its whole shard instead fails the row count check."""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # exited, not yet reaped by its new parent
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pids: list[int], within_s: float) -> list[int]:
    """Poll until every pid has exited or ``within_s`` passed; returns those still running."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and not all(_gone(pid) for pid in pids):
        time.sleep(0.05)
    return [pid for pid in pids if not _gone(pid)]


def _digest(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file of ``folder`` (hidden ones included): its size and SHA-256."""
    return {p.name: (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()) for p in sorted(folder.iterdir()) if p.is_file()}


@contextmanager
def _workers_run_frozen_mid_run(root: Path, out: Path, model: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """Start ``run --workers 2`` and, once a part has committed rows, freeze both workers (SIGSTOP; the parent
    keeps running and keeps its lock). Yields the parent and the worker pids; thaws the workers on exit."""
    args = [sys.executable, "-m", "allbatch", *cpu_run_args(root, out, model, *COMMON, "--workers", "2", *extra)]
    proc = subprocess.Popen(args, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parts = [parts_folder(out) / f"part-{k}-of-2.h5" for k in range(2)]
    deadline = time.monotonic() + 120
    while committed_rows(parts[1]) == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    workers = worker_pids(proc.pid)
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        assert len(workers) == 2 and all(committed_rows(part) < IMAGES // 2 for part in parts), (workers, proc.poll())  # mid-run
        yield proc, workers
    finally:
        for pid in workers:
            if not _gone(pid):
                os.kill(pid, signal.SIGCONT)


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and len(" ".join(lines)) < 400, stderr  # one message (rich may wrap it)
    return " ".join(" ".join(lines).split())


@pytest.fixture(scope="module")
def slides_and_single(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> tuple[Path, Path]:
    """300 images and the results of one single-process run over them (the reference rows)."""
    base = tmp_path_factory.mktemp("workers-safety")
    root = base / "slides"
    write_good_images(root, IMAGES)
    single = base / "single.h5"
    allbatch(*cpu_run_args(root, single, tiny_model, *COMMON), check_code=0)
    return root, single


def test_a_second_run_on_a_locked_output_is_refused_and_touches_nothing(
    slides_and_single: tuple[Path, Path], tmp_path: Path, tiny_model: Path
) -> None:
    root, single = slides_and_single
    out = tmp_path / "r.h5"
    with _workers_run_frozen_mid_run(root, out, tiny_model) as (first, _):
        before = _digest(parts_folder(out))
        for extra in (("--workers", "2", "--overwrite"), ("--overwrite",), ("--workers", "2", "--resume")):
            second = allbatch(*cpu_run_args(root, out, tiny_model, *COMMON, *extra), check_code=1)
            message = _one_line(second.stderr)
            assert f"another allbatch run (pid {first.pid}) is writing {out}" in message, (extra, message)
            assert _digest(parts_folder(out)) == before and not out.exists(), extra  # nothing of the first run touched
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert_same_rows(out, single, by_index=True, float_atol=1e-6)


def test_a_workers_run_never_replaces_a_results_file_written_meanwhile(
    slides_and_single: tuple[Path, Path], tmp_path: Path, tiny_model: Path
) -> None:
    """A writer that ignores the lock (a copy by hand, a program on another host of a network file system) puts a
    results file at --out while a --workers run without --overwrite runs: the run keeps its parts and refuses."""
    root, single = slides_and_single
    out = tmp_path / "r.h5"
    with _workers_run_frozen_mid_run(root, out, tiny_model) as (first, _):
        shutil.copyfile(single, out)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 1 and f"{out} already exists" in " ".join(stderr.split()), stderr
    assert out.read_bytes() == single.read_bytes()  # not replaced
    parts = sorted(parts_folder(out).glob("part-*-of-2.h5"))
    merged = tmp_path / "from-parts.h5"
    allbatch("merge", *map(str, parts), "--out", str(merged), check_code=0)  # the run's own rows are all kept
    assert_same_rows(merged, single, by_index=True, float_atol=1e-6)


def test_workers_stop_soon_after_their_parent_is_killed_and_a_resume_finishes(
    slides_and_single: tuple[Path, Path], tmp_path: Path, tiny_model: Path
) -> None:
    root, single = slides_and_single
    out = tmp_path / "r.h5"
    parts = [parts_folder(out) / f"part-{k}-of-2.h5" for k in range(2)]
    with _workers_run_frozen_mid_run(root, out, tiny_model) as (parent, workers):
        parent.kill()  # SIGKILL: no handler runs, nobody reads the progress queue any more
        parent.wait(timeout=60)  # (not communicate: the workers hold its output pipes open)
        # While its workers live, a resume is refused, naming one of them.
        refused = allbatch(*cpu_run_args(root, out, tiny_model, *COMMON, "--workers", "2", "--resume"), check_code=1)
        message = _one_line(refused.stderr)
        match = re.search(r"another allbatch run \(pid (\d+), worker (\d) \(shard \d/2, CPU\) of pid (\d+)\) is writing (\S+);", message)
        assert match is not None, message
        assert int(match[1]) == workers[int(match[2])] and int(match[3]) == parent.pid and match[4] == str(parts[int(match[2])])
    assert _wait_gone(workers, GONE_WITHIN_S) == [], "workers outlived their parent"
    for pipe in (parent.stdout, parent.stderr):
        assert pipe is not None
        pipe.close()
    committed = [committed_rows(part) for part in parts]  # each stopped after its chunk in flight (one may not have committed yet)
    assert all(n < IMAGES // 2 for n in committed) and sum(committed) > 0, committed
    allbatch(*cpu_run_args(root, out, tiny_model, *COMMON, "--workers", "2", "--resume"), check_code=0)
    assert_same_rows(out, single, by_index=True, float_atol=1e-6)


def test_a_worker_exits_when_its_parent_dies_even_with_its_queue_full(tmp_path: Path) -> None:
    """The worker side alone: a child that queued 4 MB of progress (its feeder blocked on a full pipe nobody reads)
    still exits once its parent is killed (``stop_when_parent_dies`` cancels the queue's join at exit)."""
    support = Path(__file__).resolve().parents[2] / "support"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(support), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen(
        [sys.executable, "-c", "from orphan_support import parent_main; parent_main()"], env=env, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        parent.kill()
        parent.wait(timeout=60)
        assert _wait_gone([child], GONE_WITHIN_S) == [], "the child outlived its parent"
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)
