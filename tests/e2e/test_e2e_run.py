"""End to end: `allbatch run` as a subprocess on ~50 generated files including every kind of bad input,
then resume semantics and a SIGKILL part-way through (no row lost, none duplicated, same output)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_support import allbatch, cpu_run_args
from image_factory import write_bad_files, write_good_images

from allbatch import CLASS_NAMES
from allbatch.core.status import ImageStatus

N_GOOD = 36


def rows_by_path(path: Path) -> dict[str, tuple]:
    """{relpath: (sha256, status, error, probs, label, mask_fraction)} for committed, non-superseded rows."""
    with h5py.File(path, "r") as f:
        n = int(f["meta/n_committed"][0])
        paths = [p.decode() if isinstance(p, bytes) else p for p in f["images/path"][:n]]
        status = f["images/status"][:n]
        out: dict[str, tuple] = {}
        for i, rel in enumerate(paths):
            if status[i] == ImageStatus.SUPERSEDED:
                continue
            assert rel not in out, f"{rel} has two live rows"
            error = f["images/error"][i]
            out[rel] = (
                f["images/sha256"][i].decode(),
                int(status[i]),
                error.decode() if isinstance(error, bytes) else error,
                f["pred/probs"][i],
                int(f["pred/label"][i]),
                float(f["seg/mask_fraction"][i]),
            )
    return out


@pytest.fixture(scope="module")
def input_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("slides")
    expected = write_bad_files(root)
    for name in write_good_images(root / "good", N_GOOD):
        expected[f"good/{name}"] = "ok"
    return root, expected


def test_run_writes_one_correct_row_per_file(tmp_path: Path, input_folder: tuple[Path, dict[str, str]], tiny_model: Path) -> None:
    root, expected = input_folder
    out = tmp_path / "results.h5"
    result = allbatch(
        *cpu_run_args(root, out, tiny_model),
        "--batch-size",
        "8",
        "--quiet",
        "--json",
        check_code=3,
    )
    summary = json.loads(result.stdout)
    n_failed = sum(1 for s in expected.values() if s != "ok")
    assert (summary["discovered"], summary["failed"], summary["ok"]) == (len(expected), n_failed, len(expected) - n_failed)
    rows = rows_by_path(out)
    assert sorted(rows) == sorted(expected)
    for rel, (sha, status, error, probs, label, fraction) in rows.items():
        assert ImageStatus(status).name.lower() == expected[rel], (rel, error)
        if expected[rel] == "ok":
            assert sha == hashlib.sha256((root / rel).read_bytes()).hexdigest()
            assert error == ""
            assert probs.dtype == np.float32 and abs(float(probs.sum()) - 1.0) < 1e-5
            assert label == int(np.argmax(probs))
            assert 0.0 <= fraction <= 1.0
        else:
            assert error, rel
            assert np.isnan(probs).all() and label == -1 and np.isnan(fraction)
    with h5py.File(out, "r") as f:
        assert list(f.attrs["class_names"]) == list(CLASS_NAMES)
        assert f.attrs["backend"] == "onnxruntime"
        assert f["pred/probs"].compression == "gzip" and f["pred/probs"].chunks is not None
    # a second run without --resume/--overwrite refuses, keeps the file, exit 1, one line
    again = allbatch("run", str(root), "--out", str(out), "--model", str(tiny_model), "--quiet", check_code=1)
    assert "--resume" in again.stderr and "Traceback" not in again.stderr
    assert rows_by_path(out).keys() == rows.keys()
    # --resume on an unchanged folder redoes nothing and still reports the failed files
    resumed = json.loads(
        allbatch(
            *cpu_run_args(root, out, tiny_model),
            "--resume",
            "--quiet",
            "--json",
            check_code=3,
        ).stdout
    )
    assert resumed["processed"] == 1  # only the unreadable (dangling) file is retried
    assert resumed["skipped"] == len(expected) - 1
    assert rows_by_path(out).keys() == rows.keys()


def test_resume_redoes_changed_files_and_csv_export(tmp_path: Path, tiny_model: Path) -> None:
    root = tmp_path / "slides"
    write_good_images(root, 6)
    out = tmp_path / "r.h5"
    common = ["--out", str(out), "--model", str(tiny_model), "--backend", "onnxruntime", "--decoder", "cpu", "--quiet", "--json"]
    allbatch("run", str(root), *common, check_code=0)
    first = rows_by_path(out)
    write_good_images(root, 1, start=40)  # img40.jpg is new
    (root / "img2.jpg").write_bytes((root / "img40.jpg").read_bytes())  # img2 changed
    summary = json.loads(allbatch("run", str(root), *common, "--resume", check_code=0).stdout)
    assert (summary["processed"], summary["skipped"]) == (2, 5)
    second = rows_by_path(out)
    assert sorted(second) == sorted([*first, "img40.jpg"])
    assert second["img2.jpg"][0] != first["img2.jpg"][0]
    np.testing.assert_array_equal(second["img2.jpg"][3], second["img40.jpg"][3])
    with h5py.File(out, "r") as f:
        assert int((f["images/status"][: int(f["meta/n_committed"][0])] == ImageStatus.SUPERSEDED).sum()) == 1
    csv_path = tmp_path / "r.csv"
    allbatch("export", str(out), "--csv", str(csv_path), check_code=0)
    lines = csv_path.read_text().strip().splitlines()
    assert len(lines) == 1 + 7 and lines[0].startswith("path,")


def test_sigkill_part_way_then_resume_equals_uninterrupted(tmp_path: Path, tiny_model: Path) -> None:
    root = tmp_path / "slides"
    write_good_images(root, 400)
    common = ["--model", str(tiny_model), "--backend", "onnxruntime", "--decoder", "cpu", "--batch-size", "4", "--quiet"]
    reference = tmp_path / "reference.h5"
    started = time.perf_counter()
    allbatch("run", str(root), "--out", str(reference), *common, check_code=0)
    uninterrupted = time.perf_counter() - started  # kills are placed relative to this, whatever the machine's speed
    expected = rows_by_path(reference)

    out = tmp_path / "killed.h5"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kills = 0
    for fraction in (0.5, 0.4, 0.3):
        delay = fraction * uninterrupted
        args = [sys.executable, "-m", "allbatch", "run", str(root), "--out", str(out), *common, "--resume"]
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        partial = rows_by_path(out)  # opens, and every committed row is intact
        for rel, row in partial.items():
            assert row[0] == expected[rel][0] and row[4] == expected[rel][4]
    assert kills >= 1, "the run finished before any kill: make the input larger"
    allbatch("run", str(root), "--out", str(out), *common, "--resume", check_code=0)
    final = rows_by_path(out)
    assert sorted(final) == sorted(expected)
    with h5py.File(out, "r") as f:
        assert int(f["meta/n_committed"][0]) == len(expected)  # no duplicated rows
    for rel, row in final.items():
        ref = expected[rel]
        assert row[:3] == ref[:3] and row[4] == ref[4] and row[5] == ref[5]
        np.testing.assert_allclose(row[3], ref[3], rtol=0, atol=1e-6)  # batch boundaries differ after a resume


def test_exit_code_3_only_for_files_of_this_run(tmp_path: Path, tiny_model: Path) -> None:
    """A bad upload makes the run that reads it exit 3; a --resume with nothing new exits 0, still reporting it
    (so `allbatch run X --resume && allbatch report ...` works on an archive holding one bad file)."""
    root = tmp_path / "slides"
    write_good_images(root, 6)
    (root / "upload.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a whole JPEG")
    out = tmp_path / "r.h5"
    first = allbatch(*cpu_run_args(root, out, tiny_model, "--json"), check_code=3)
    assert json.loads(first.stdout)["failed_this_run"] == 1
    resumed = allbatch(*cpu_run_args(root, out, tiny_model, "--resume", "--json"), check_code=0)
    summary = json.loads(resumed.stdout)
    assert (summary["processed"], summary["skipped"], summary["failed"], summary["failed_this_run"]) == (0, 7, 1, 0)
    assert "upload.jpg" in resumed.stderr and "failed 1 (0 in this run)" in resumed.stderr  # the failure stays reported
    # a new bad file is a failure of this run again: exit 3
    (root / "second.jpg").write_bytes(b"not an image at all")
    again = allbatch(*cpu_run_args(root, out, tiny_model, "--resume", "--json"), check_code=3)
    assert json.loads(again.stdout)["failed_this_run"] == 1 and json.loads(again.stdout)["failed"] == 2
