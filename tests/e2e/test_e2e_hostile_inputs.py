"""End to end on hostile inputs (issue 9): `allbatch run` as a subprocess, then `--resume`."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
from cli_support import allbatch, cpu_run_args
from image_factory import write_good_images
from paths import REPO

from allbatch.core.pathtext import text_to_fs

DEMO = REPO / "allbatch" / "demo"


def test_non_utf8_file_and_folder_names_get_rows_and_resume(tmp_path: Path, tiny_model: Path) -> None:
    root = os.path.join(os.fsencode(tmp_path), b"slides-\xe9")
    os.makedirs(os.path.join(root, b"sub\xff"))
    shutil.copy(DEMO / "Benign" / "WBC-Benign-001.jpg", os.fsdecode(os.path.join(root, b"sub\xff", b"img\xfe.jpg")))
    shutil.copy(DEMO / "Pro" / "WBC-Malignant-Pro-151.jpg", os.fsdecode(os.path.join(root, b"plain.jpg")))
    out = tmp_path / "r.h5"
    args = cpu_run_args(Path(os.fsdecode(root)), out, tiny_model, "--quiet", "--json")
    first = json.loads(allbatch(*args, check_code=0).stdout)
    assert (first["ok"], first["failed"]) == (2, 0)
    with h5py.File(out, "r") as f:
        paths = f["images/path"].asstr()[:].tolist()
        assert f.attrs["input_root"].endswith("slides-\\xe9")
    assert sorted(text_to_fs(p) for p in paths) == [b"plain.jpg", b"sub\xff/img\xfe.jpg"]
    resumed = json.loads(allbatch(*args, "--resume", check_code=0).stdout)
    assert (resumed["processed"], resumed["skipped"]) == (0, 2)


def test_file_size_limit_mid_run_is_one_line_and_resume_finishes(tmp_path: Path, tiny_model: Path) -> None:
    """`ulimit -f` (RLIMIT_FSIZE) below what the run needs: exit 1 with one line, no leftovers, and
    `--resume` without the limit completes the folder with every committed row kept."""
    root = tmp_path / "src"
    write_good_images(root, 40)
    out = tmp_path / "r.h5"
    # batch size 1: each commit adds new vlen heap collections (4 KiB or more), so the file outgrows the limit
    args = [sys.executable, "-m", "allbatch", *cpu_run_args(root, out, tiny_model, "--batch-size", "1", "--quiet")]

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (580 * 1024, resource.RLIM_INFINITY))  # a new file is 496 KiB, a full one 656

    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400"}
    limited = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, preexec_fn=limit_file_size)
    assert limited.returncode == 1, limited.stderr[-2000:]
    assert "file size limit" in limited.stderr and "Traceback" not in limited.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) in (["r.h5", "src"], ["src"])  # no temporary or lock file
    resumed = json.loads(allbatch(*cpu_run_args(root, out, tiny_model, "--resume", "--quiet", "--json"), check_code=0).stdout)
    assert resumed["processed"] + resumed["skipped"] == 40 and resumed["ok"] == 40
    assert resumed["skipped"] > 0, "the limited run committed nothing: the limit is below a new file"
    with h5py.File(out, "r") as f:
        assert sorted(f["images/path"].asstr()[:].tolist()) == sorted(f"img{k}.jpg" for k in range(40))
