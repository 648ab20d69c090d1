"""Every output fault ends in one line (issue 24, points 4 and 9): a file-size limit (what a full disk does to a
write, without root: RLIMIT_FSIZE in a subprocess) while a results file is rebuilt, exported, reported or merged;
damaged root attributes; a run whose command line held a non-UTF-8 path. Exit 1, no interpreter crash, no
truncated file in place of a good one, no hidden temporary copies left."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_support import allbatch, allbatch_with_file_size_limit, cpu_run_args, one_error_line
from image_factory import write_good_images
from paths import REPO
from results_crash_support import COMPAT, rows_for

from allbatch.results.reader import read_results
from allbatch.results.writer import ResultsWriter


def hidden_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and not p.name.endswith("allbatch-lock"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A finished results file of 12 images (``r.h5``), beside its two shard parts (``p0.h5``, ``p1.h5``)."""
    folder = tmp_path_factory.mktemp("finished")
    write_good_images(folder / "src" / "Benign", 6)
    write_good_images(folder / "src" / "Pro", 6, start=6)
    allbatch(*cpu_run_args(folder / "src", folder / "r.h5", tiny_model, "--quiet"), check_code=0)
    for k in (0, 1):
        allbatch(*cpu_run_args(folder / "src", folder / f"p{k}.h5", tiny_model, "--shard", f"{k}/2", "--quiet"), check_code=0)
    return folder / "r.h5"


def test_a_file_size_limit_while_a_resume_rebuilds_the_file_is_one_error_not_a_crash(tmp_path: Path) -> None:
    """A resume rebuilds the file beside itself; a write failing there used to be retried by HDF5 when Python freed
    the dataset objects (a traceback per dataset, 'Exception ignored') and HDF5's clean-up at exit crashed (139)."""
    base = tmp_path / "base.h5"
    with ResultsWriter.open(base, mode="new", provenance={}, compat=COMPAT, expected_rows=3000) as writer:
        for start in range(0, 3000, 64):
            writer.append(rows_for(list(range(start, min(3000, start + 64)))))
    size = base.stat().st_size
    support = REPO / "tests" / "support"
    for fraction in (0.9, 1.1, 1.3, 1.6):
        out = tmp_path / f"r{fraction}.h5"
        shutil.copyfile(base, out)
        script = textwrap.dedent(
            f"""
            import resource, sys
            sys.path.insert(0, {str(support)!r}); sys.path.insert(0, {str(REPO)!r})
            from pathlib import Path
            from results_crash_support import COMPAT, rows_for
            from allbatch.core.errors import ResultsFileError
            from allbatch.results.writer import ResultsWriter
            resource.setrlimit(resource.RLIMIT_FSIZE, ({int(size * fraction)}, resource.RLIM_INFINITY))
            try:
                with ResultsWriter.open(Path({str(out)!r}), mode="resume", provenance={{}}, compat=COMPAT, expected_rows=3000) as w:
                    w.append(rows_for(list(range(3000, 3010))))
            except ResultsFileError as exc:
                print("ERROR", exc)
            """
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (fraction, result.returncode, result.stderr[-2000:])
        assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, (fraction, result.stderr[-2000:])
        assert result.stdout.startswith("ERROR cannot write") and "file size limit" in result.stdout, result.stdout
        assert len(read_results(out)) == 3000  # the file as it was: every committed row kept
    assert hidden_files(tmp_path) == []


def test_export_under_a_file_size_limit_leaves_the_previous_csv_whole(finished_run: Path, tmp_path: Path) -> None:
    for option in ("--csv", "--groups"):
        target = tmp_path / f"out{option}.csv"
        allbatch("export", str(finished_run), option, str(target), check_code=0)
        before = target.read_bytes()
        error = one_error_line(allbatch_with_file_size_limit(300, "export", str(finished_run), option, str(target), "--force"))
        assert error == f"error: cannot write {target}: the file size limit was reached; the previous file, if any, is unchanged"
        assert target.read_bytes() == before  # not truncated
    assert hidden_files(tmp_path) == []


def test_report_under_a_file_size_limit_leaves_the_previous_report_whole(finished_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    allbatch("report", str(finished_run), "-o", str(target), check_code=0)
    before = target.read_bytes()
    error = one_error_line(allbatch_with_file_size_limit(len(before) // 2, "report", str(finished_run), "-o", str(target), "--force"))
    assert "file size limit" in error and target.read_bytes() == before
    assert hidden_files(tmp_path) == []


def test_merge_under_a_file_size_limit_is_one_line_and_leaves_nothing(finished_run: Path, tmp_path: Path) -> None:
    parts = [str(finished_run.with_name(f"p{k}.h5")) for k in (0, 1)]
    out = tmp_path / "merged.h5"
    error = one_error_line(allbatch_with_file_size_limit(20_000, "merge", *parts, "--out", str(out)))
    assert error.startswith(f"error: cannot write {out}: the file size limit was reached")
    assert not out.exists() and hidden_files(tmp_path) == []


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("json_attrs", "not json"),
        ("run_history", "{broken"),
        ("compat", "[1,"),
        ("class_names", 5),
        ("schema_version", "abc"),
        ("large_attrs", '["missing"]'),
        ("created_utc", np.bytes_(b"\xff\xfe")),
    ],
)
def test_damaged_root_attributes_are_one_line(finished_run: Path, tmp_path: Path, attribute: str, value: object) -> None:
    damaged = tmp_path / "d.h5"
    shutil.copyfile(finished_run, damaged)
    with h5py.File(damaged, "r+") as f:
        f.attrs[attribute] = value
    for command in (["export", str(damaged), "--csv", str(tmp_path / "d.csv")], ["report", str(damaged), "-o", str(tmp_path / "d.html")]):
        error = one_error_line(allbatch(*command))
        assert error.startswith(f"error: {damaged} is damaged: its root attributes do not read"), error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]


def test_report_of_a_run_whose_command_line_held_a_non_utf8_path(tmp_path: Path, tiny_model: Path) -> None:
    root = os.path.join(os.fsencode(tmp_path), b"slides-\xff")
    write_good_images(Path(os.fsdecode(root)), 2)
    out = tmp_path / "r.h5"
    allbatch(*cpu_run_args(Path(os.fsdecode(root)), out, tiny_model, "--quiet"), check_code=0)
    report = tmp_path / "report.html"
    allbatch("report", str(out), "-o", str(report), check_code=0)
    assert "slides-\\xff" in report.read_text(encoding="utf-8")  # the argument shown with its byte escaped
