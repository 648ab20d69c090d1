"""End to end on hostile inputs (issue 9): `allbatch run` as a subprocess, then `--resume`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
from test_e2e_run import allbatch, cpu_run_args

from allbatch.pathtext import text_to_fs

DEMO = Path(__file__).resolve().parents[1] / "allbatch" / "demo"


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
