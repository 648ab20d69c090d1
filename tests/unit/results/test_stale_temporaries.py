"""Temporary copies a killed writer left beside an output (``.<name>.<pid>.allbatch-tmp``, issue 24 point 6): the
next writer of that output removes them under its lock, whichever executor it is (the run plan) or ``merge``;
the temporary copy of a live writer is never touched, because that writer holds the lock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_support import allbatch, cpu_run_args
from image_factory import write_good_images

from allbatch.core.atomic_file import tmp_path as temporary_for
from allbatch.core.errors import UserInputError
from allbatch.results.lock import OutputLock
from allbatch.run.config import RunConfig
from allbatch.run.plan import plan_run

DEAD_PID = 2**22 + 1
"""Above Linux's largest pid (pid_max is at most 2**22): no live process has it."""


def _stale(output: Path) -> Path:
    """A temporary copy as a writer killed mid-write leaves it (the name ``atomic_file.tmp_path`` gives)."""
    stale = output.with_name(f".{output.name}.{DEAD_PID}.allbatch-tmp")
    stale.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(4096))  # the start of an HDF5 file, cut short
    return stale


@pytest.fixture(scope="module")
def two_parts(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> list[Path]:
    base = tmp_path_factory.mktemp("parts")
    write_good_images(base / "in", 4)
    parts = [base / f"part{k}.h5" for k in range(2)]
    for k, part in enumerate(parts):
        allbatch(*cpu_run_args(base / "in", part, tiny_model, "--shard", f"{k}/2", "--quiet"), check_code=0)
    return parts


def test_the_run_plan_removes_stale_temporaries_of_its_output(tmp_path: Path, tiny_model: Path) -> None:
    """Every executor plans its run with ``plan_run`` (one process, --workers/--gpus, Ray)."""
    write_good_images(tmp_path / "in", 2)
    out = tmp_path / "r.h5"
    stale, other = _stale(out), _stale(tmp_path / "other.h5")
    with plan_run(RunConfig(tmp_path / "in", out, tiny_model, "onnxruntime", "cpu")):
        assert not stale.exists()
    assert other.exists()  # another output's


def test_merge_removes_stale_temporaries_of_its_output(two_parts: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "merged.h5"
    stale = _stale(out)
    allbatch("merge", *map(str, two_parts), "--out", str(out), check_code=0)
    assert not stale.exists() and out.exists()


def test_a_live_writers_temporary_is_never_removed(two_parts: list[Path], tmp_path: Path, tiny_model: Path) -> None:
    write_good_images(tmp_path / "in", 2)
    out = tmp_path / "r.h5"
    with OutputLock(out):  # this process writes out: its temporary copy is live
        live = temporary_for(out)
        live.write_bytes(b"being written")
        merge = allbatch("merge", *map(str, two_parts), "--out", str(out), check_code=1)
        assert f"another allbatch run (pid {os.getpid()}) is writing {out}" in " ".join(merge.stderr.split())
        with pytest.raises(UserInputError, match="another allbatch run"):
            plan_run(RunConfig(tmp_path / "in", out, tiny_model, "onnxruntime", "cpu"))
        assert live.read_bytes() == b"being written"
