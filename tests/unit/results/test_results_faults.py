"""results.h5 faults (issue 9): disk full, file-size limit, damaged gzip chunks, truncation, flipped bytes,
interrupted supersedes. Each ends in one ResultsFileError line and leaves a file the next run can use."""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from paths import REPO
from results_crash_support import COMPAT, image_path, rows_for

from allbatch.core.errors import ResultsFileError
from allbatch.results import schema
from allbatch.results import writer as writer_module
from allbatch.results.reader import read_results
from allbatch.results.writer import ResultsWriter

ROOT = REPO


def open_writer(path: Path, mode: str = "new") -> ResultsWriter:
    return ResultsWriter.open(path, mode=mode, provenance={"argv": ["t"]}, compat=COMPAT)  # type: ignore[arg-type]


def killed_run(path: Path, indices: list[int]) -> None:
    """Rows committed, then the process 'dies': the working (uncompressed) file stays as it is."""
    writer = open_writer(path)
    writer.append(rows_for(indices))
    writer.close(compact=False)


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        value = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([value ^ 0x10]))


def chunk_offset(path: Path, dataset: str) -> tuple[int, int]:
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(0)
        return info.byte_offset, info.size


def no_leftovers(folder: Path) -> bool:
    return not list(folder.glob(".*allbatch-tmp")) and not list(folder.glob(".*allbatch-lock"))


# ----- checksums: a flipped byte is detected, never carried ---------------------------------------


def test_a_flipped_probability_byte_in_a_killed_run_is_redone_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    killed_run(out, list(range(10)))
    offset, _ = chunk_offset(out, schema.PROBS)
    flip_byte(out, offset + 3 * 16 + 2)  # row 3's first probability
    with pytest.raises(ResultsFileError, match=r"damaged: 1 of 10 committed rows fail verification \(row 3: checksum mismatch\)"):
        read_results(out)
    with open_writer(out, "resume") as writer:
        committed = writer.committed()
        assert image_path(3) not in committed and len(committed) == 9  # dropped: the pipeline redoes it
        writer.append(rows_for([3]))
    table = read_results(out)
    assert sorted(table.paths.tolist()) == sorted(image_path(i) for i in range(10))
    np.testing.assert_array_equal(table.probs[list(table.paths).index(image_path(3))], rows_for([3]).probs[0])


@pytest.mark.parametrize("dataset", [schema.STATUS, schema.LABEL, schema.MASK_FRACTION, schema.SHA256, schema.FILE_STAT])
def test_a_flipped_byte_in_any_column_is_detected(tmp_path: Path, dataset: str) -> None:
    out = tmp_path / "r.h5"
    killed_run(out, list(range(6)))
    offset, _ = chunk_offset(out, dataset)
    with h5py.File(out, "r") as f:
        row_bytes = f[dataset].dtype.itemsize * int(np.prod(f[dataset].shape[1:]))
    flip_byte(out, offset + 2 * row_bytes)
    with pytest.raises(ResultsFileError, match="row 2: checksum mismatch"):
        read_results(out)


def test_a_status_flipped_to_superseded_is_not_taken_for_a_supersede(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    killed_run(out, list(range(4)))
    with h5py.File(out, "r+") as f:
        f[schema.STATUS][1] = np.int8(6)  # what a corrupted status byte could read
    with pytest.raises(ResultsFileError, match="row 1: checksum mismatch"):
        read_results(out)


def test_a_supersede_cut_between_checksum_and_status_reads_as_superseded(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    killed_run(out, list(range(4)))
    with h5py.File(out, "r+") as f:
        columns = schema.read_rows(f, 1, 2, ["a", "b", "c", "d"])
        columns[schema.STATUS] = np.array([6], dtype=np.int8)
        f[schema.ROW_CRC][1] = schema.row_checksums(columns)[0]  # the first of supersede's two writes
    table = read_results(out, include_superseded=True)
    assert table.status.tolist()[1] == 6
    assert image_path(1) not in read_results(out).paths.tolist()


def test_checksums_survive_compaction_and_supersede(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    with open_writer(out) as writer:
        writer.append(rows_for(list(range(30))))
        writer.supersede([4, 5])
        writer.append(rows_for([4, 5]))
    with h5py.File(out, "r") as f:
        assert f[schema.PROBS].compression == "gzip"
        columns = schema.read_rows(f, 0, 32, ["a", "b", "c", "d"])
        assert schema.verify_rows(columns).all()
    assert len(read_results(out)) == 30


# ----- damaged and truncated finished files ---------------------------------------------------------


def test_a_damaged_gzip_chunk_is_one_error_for_readers_and_redone_by_resume(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    with open_writer(out) as writer:
        writer.append(rows_for(list(range(50))))
    offset, size = chunk_offset(out, schema.PROBS)
    with out.open("r+b") as handle:
        handle.seek(offset + size // 3)
        handle.write(b"\x00\xff" * 8)
    with pytest.raises(ResultsFileError, match="damaged: 50 of 50 committed rows fail verification") as info:
        read_results(out)
    assert "\n" not in str(info.value)
    with open_writer(out, "resume") as writer:
        assert writer.committed() == {}  # all 50 rows lived in the damaged chunk: every file is redone
        writer.append(rows_for(list(range(50))))
    assert len(read_results(out)) == 50 and no_leftovers(tmp_path)


def test_a_truncated_results_file_says_so(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    with open_writer(out) as writer:
        writer.append(rows_for(list(range(50))))
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    for action in (lambda: read_results(out), lambda: open_writer(out, "resume")):
        with pytest.raises(ResultsFileError, match="is truncated") as info:
            action()
        assert "another allbatch run" not in str(info.value) and "--overwrite" in str(info.value)
    with open_writer(out, "overwrite") as writer:  # and it never blocks a new run
        writer.append(rows_for([0]))
    assert no_leftovers(tmp_path)


def test_export_and_eval_of_a_damaged_file_are_one_line(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    killed_run(out, list(range(5)))
    offset, _ = chunk_offset(out, schema.MASK_FRACTION)
    flip_byte(out, offset + 1)
    for command in (["export", str(out), "--csv", str(tmp_path / "r.csv")], ["eval", str(out)]):
        result = subprocess.run([sys.executable, "-m", "allbatch", *command], capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, result.stderr
        assert "damaged" in result.stderr and "Traceback" not in result.stderr


# ----- write failures -------------------------------------------------------------------------------


def test_file_size_limit_while_appending_is_one_error_and_resumable(tmp_path: Path) -> None:
    """RLIMIT_FSIZE in a subprocess: the append that crosses it fails with EFBIG (Python ignores SIGXFSZ)."""
    out = tmp_path / "r.h5"
    script = textwrap.dedent(
        f"""
        import os, resource, sys
        sys.path.insert(0, {str(ROOT / "tests" / "support")!r}); sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from results_crash_support import COMPAT, rows_for
        from allbatch.core.errors import ResultsFileError
        from allbatch.results.writer import ResultsWriter
        out = Path({str(out)!r})
        writer = ResultsWriter.open(out, mode="new", provenance={{}}, compat=COMPAT, expected_rows=64)
        writer.append(rows_for(list(range(8))))
        resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(out) + 200_000, resource.RLIM_INFINITY))
        try:
            for start in range(8, 4000, 8):
                rows = rows_for(list(range(start, start + 8)))
                rows.errors = ["x" * 20_000] * 8
                writer.append(rows)
        except ResultsFileError as exc:
            print("ERROR", exc)
        writer.close()
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ERROR cannot write") and "file size limit" in result.stdout, result.stdout
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    assert "--resume" in result.stdout and result.stdout.count("\n") == 1
    with open_writer(out, "resume") as writer:
        committed = writer.committed()
        assert {image_path(i) for i in range(8)} <= set(committed)
    assert no_leftovers(tmp_path)


def test_disk_full_during_compaction_keeps_the_working_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r.h5"
    writer = open_writer(out)
    writer.append(rows_for(list(range(12))))

    def disk_full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer_module, "_copy_rows", disk_full)
    with pytest.raises(ResultsFileError, match=r"cannot write .*: the disk is full; the rows committed so far are kept"):
        writer.close()
    monkeypatch.undo()
    assert no_leftovers(tmp_path)
    with open_writer(out, "resume") as resumed:
        assert len(resumed.committed()) == 12


def test_disk_full_in_an_append_ends_the_writer_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r.h5"
    writer = open_writer(out)
    writer.append(rows_for([0, 1]))
    real_flush = h5py.File.flush

    def failing_flush(self: h5py.File) -> None:
        raise OSError("Can't write data (file write failed: errno = 28, error message = 'No space left on device')")

    monkeypatch.setattr(h5py.File, "flush", failing_flush)
    with pytest.raises(ResultsFileError, match="the disk is full"):
        writer.append(rows_for([2, 3]))
    monkeypatch.setattr(h5py.File, "flush", real_flush)
    with pytest.raises(ResultsFileError, match="closed"):
        writer.append(rows_for([4]))
    writer.close()  # a no-op now; never raises a second time
    assert no_leftovers(tmp_path)
    with open_writer(out, "resume") as resumed:
        assert set(resumed.committed()) >= {image_path(0), image_path(1)}


def test_a_version_1_file_is_read_and_upgraded_by_resume(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    with open_writer(out) as writer:
        writer.append(rows_for(list(range(7))))
    with h5py.File(out, "r+") as f:  # what allbatch wrote before schema 2: no file_stat, no row_crc
        del f[schema.FILE_STAT], f[schema.ROW_CRC]
        f.attrs["schema_version"] = 1
    assert len(read_results(out)) == 7
    with open_writer(out, "resume") as writer:
        assert len(writer.committed()) == 7
        writer.append(rows_for([7]))
    with h5py.File(out, "r") as f:
        assert int(f.attrs["schema_version"]) == schema.SCHEMA_VERSION
        columns = schema.read_rows(f, 0, 8, ["a", "b", "c", "d"])
        assert schema.verify_rows(columns).all() and (columns[schema.FILE_STAT][:7] == -1).all()
