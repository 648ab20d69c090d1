"""ResultsWriter and BackgroundWriter: modes, compat refusal, supersede, layouts, growth, threading."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
import pytest
from results_crash_support import COMPAT, expected_row, image_path, rows_for

import allbatch
from allbatch import CLASS_NAMES
from allbatch.core.errors import ResultsFileError, UserInputError
from allbatch.core.status import ImageStatus
from allbatch.results import schema
from allbatch.results.reader import read_results
from allbatch.results.rows import ResultRows
from allbatch.results.writer import BackgroundWriter, CommittedRow, ResultsWriter

PROVENANCE = {
    "argv": ["allbatch", "run", "slides"],
    "backend": "onnxruntime",
    "device": "cpu",
    "batch_size": 8,
    "model_manifest": {"name": "tiny", "class_names": list(CLASS_NAMES)},
    "library_versions": {"h5py": h5py.__version__},
}


def open_writer(path: Path, mode: str = "new", compat: dict[str, str] | None = None, **kw: object) -> ResultsWriter:
    return ResultsWriter.open(path, mode=mode, provenance=PROVENANCE, compat=compat or COMPAT, **kw)  # type: ignore[arg-type]


def write_images(path: Path, indices: list[int], mode: str = "new", **kw: object) -> None:
    with open_writer(path, mode, **kw) as writer:
        writer.append(rows_for(indices))


def stored_paths(path: Path) -> list[str]:
    with h5py.File(path, "r") as f:
        n = int(f["meta/n_committed"][0])
        return f["images/path"].asstr()[:n].tolist()


def test_new_writes_schema_attrs_and_compacts_on_close(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    write_images(out, list(range(40)), expected_rows=40)
    with h5py.File(out, "r") as f:
        assert int(f["meta/n_committed"][0]) == 40 and f["meta/n_committed"].dtype == np.int64
        for spec in schema.row_datasets(len(CLASS_NAMES)):
            dset = f[spec.name]
            assert dset.shape[0] == 40, spec.name
            assert dset.chunks == (schema.CHUNK_ROWS, *spec.row_shape), spec.name
            assert dset.compression == "gzip" and dset.compression_opts == schema.GZIP_LEVEL, spec.name
            assert dset.maxshape[0] is None
        assert h5py.check_string_dtype(f["images/path"].dtype).encoding == "utf-8"
        assert f["images/sha256"].dtype == np.dtype("S64")
        assert f["images/status"].dtype == np.int8 and f["pred/label"].dtype == np.int8
        assert f["pred/probs"].dtype == np.float32 and f["pred/probs"].shape == (40, 4)
        assert f["images/status"].attrs["names"] == ImageStatus.names_attr()
        assert list(f["pred/probs"].attrs["class_names"]) == list(CLASS_NAMES)
        assert list(f.attrs["class_names"]) == list(CLASS_NAMES)  # a plain string array for any reader
        assert f.attrs["schema_version"] == schema.SCHEMA_VERSION
        assert f.attrs["argv"] == json.dumps(PROVENANCE["argv"])  # lists and dicts as JSON strings
        assert f.attrs["backend"] == "onnxruntime" and f.attrs["batch_size"] == 8  # str and int as they are
        assert json.loads(f.attrs["model_manifest"])["name"] == "tiny"
        assert json.loads(f.attrs["compat"]) == COMPAT
        assert f.attrs["runs"] == 1 and f.attrs["allbatch_version"] == allbatch.__version__
        assert datetime.fromisoformat(f.attrs["updated_utc"]) >= datetime.fromisoformat(f.attrs["created_utc"])
        assert f.id.get_filesize() == out.stat().st_size
    table = read_results(out)
    assert table.attrs["model_manifest"]["class_names"] == list(CLASS_NAMES)
    assert table.attrs["argv"] == PROVENANCE["argv"]


def test_working_file_is_preallocated_and_appends_never_move_a_chunk(tmp_path: Path) -> None:
    out = tmp_path / "w.h5"
    writer = open_writer(out, expected_rows=3000)
    try:

        def chunk_places() -> dict[tuple[str, int], tuple[int, int]]:
            with h5py.File(out, "r") as f:
                places = {}
                for spec in schema.row_datasets(len(CLASS_NAMES)):
                    dset = f[spec.name]
                    assert dset.compression is None and dset.shape[0] == 3072  # capacity, whole chunks
                    for i in range(dset.id.get_num_chunks()):
                        info = dset.id.get_chunk_info(i)
                        places[(spec.name, i)] = (info.byte_offset, info.size)
                return places

        before = chunk_places()
        assert len(before) == len(schema.row_datasets(len(CLASS_NAMES))) * 3  # every chunk allocated when the file was built
        for start in range(0, 2500, 37):
            writer.append(rows_for(list(range(start, min(start + 37, 2500)))))
        assert chunk_places() == before
        with h5py.File(out, "r") as f:
            assert f["meta/n_committed"].id.get_offset() % 8 == 0  # one page: updated all or nothing
    finally:
        writer.close()
    assert stored_paths(out) == [image_path(i) for i in range(2500)]


def test_new_refuses_an_existing_file_and_overwrite_replaces_it(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    write_images(out, [0, 1, 2])
    with pytest.raises(UserInputError, match=r"--resume.*--overwrite"):
        open_writer(out, "new")
    assert stored_paths(out) == [image_path(i) for i in range(3)]  # untouched
    write_images(out, [7], mode="overwrite")
    assert stored_paths(out) == [image_path(7)]
    assert read_results(out).attrs["runs"] == 1


def test_overwrite_replaces_a_file_that_is_not_hdf5(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    out.write_bytes(b"not hdf5 at all")
    write_images(out, [3], mode="overwrite")
    assert stored_paths(out) == [image_path(3)]


def test_resume_appends_after_committed_rows_and_updates_provenance(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    write_images(out, [0, 1, 2])
    created = read_results(out).attrs["created_utc"]
    with ResultsWriter.open(out, mode="resume", provenance={**PROVENANCE, "argv": ["again"]}, compat=COMPAT, expected_rows=5) as writer:
        assert writer.n_committed == 3
        committed = writer.committed()
        assert committed[image_path(1)] == CommittedRow(1, expected_row(1)[1], int(ImageStatus.OK))
        writer.append(rows_for([3, 4]))
    table = read_results(out)
    assert table.paths.tolist() == [image_path(i) for i in range(5)]
    assert table.attrs["argv"] == ["again"] and table.attrs["runs"] == 2 and table.attrs["created_utc"] == created
    assert [entry["argv"] for entry in table.attrs["run_history"]] == [PROVENANCE["argv"], ["again"]]
    assert [entry["committed_before"] for entry in table.attrs["run_history"]] == [0, 3]


def test_resume_creates_an_absent_file(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    write_images(out, [0], mode="resume")
    assert stored_paths(out) == [image_path(0)]


@pytest.mark.parametrize("key", sorted(COMPAT))
def test_resume_refuses_a_different_model_or_preprocessing(tmp_path: Path, key: str) -> None:
    out = tmp_path / "r.h5"
    write_images(out, [0, 1])
    before = out.read_bytes()
    with pytest.raises(UserInputError, match=f"different {key}.*--overwrite"):
        open_writer(out, "resume", compat={**COMPAT, key: COMPAT[key] + "x"})
    assert out.read_bytes() == before


def test_resume_refuses_an_extra_compat_key(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    write_images(out, [0])
    with pytest.raises(UserInputError, match="different engine_key"):
        open_writer(out, "resume", compat={**COMPAT, "engine_key": "k"})


@pytest.mark.parametrize("content", [b"", b"hello, not HDF5\n" * 100])
def test_resume_of_a_file_that_is_not_hdf5_is_a_results_file_error(tmp_path: Path, content: bytes) -> None:
    out = tmp_path / "r.h5"
    out.write_bytes(content)
    with pytest.raises(ResultsFileError, match="not an HDF5 file"):
        open_writer(out, "resume")


def test_resume_of_an_hdf5_file_that_is_not_ours(tmp_path: Path) -> None:
    out = tmp_path / "other.h5"
    with h5py.File(out, "w") as f:
        f["x"] = [1, 2, 3]
    with pytest.raises(ResultsFileError, match="not an allbatch results file"):
        open_writer(out, "resume")


def test_resume_discards_rows_past_n_committed(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    writer = open_writer(out, expected_rows=100)
    writer.append(rows_for([0, 1, 2]))
    # rows a killed run wrote but never committed: present in the datasets, not counted
    with h5py.File(out, "r+") as f:
        f["images/path"][3:6] = ["ghost/a.jpg", "ghost/b.jpg", "ghost/c.jpg"]
        f["pred/probs"][3:6] = 0.5
    writer.close(compact=False)  # what a kill leaves: the working layout
    with open_writer(out, "resume") as writer:
        assert writer.n_committed == 3 and set(writer.committed()) == {image_path(i) for i in range(3)}
        writer.append(rows_for([9]))
    with h5py.File(out, "r") as f:
        assert f["images/path"].asstr()[:].tolist() == [image_path(i) for i in (0, 1, 2, 9)]


def test_supersede_marks_old_rows_and_committed_keeps_the_latest(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    with open_writer(out) as writer:
        writer.append(rows_for([0, 1, 2]))
        changed = rows_for([1])
        changed.sha256 = ["f" * 64]
        writer.append(changed)
        writer.supersede([1])
        committed = writer.committed()
        assert committed[image_path(1)] == CommittedRow(3, "f" * 64, int(ImageStatus.OK))
        assert {row.row for row in committed.values()} == {0, 2, 3}
        with pytest.raises(ValueError, match="committed rows"):
            writer.supersede([4])
    with h5py.File(out, "r") as f:
        assert f["images/status"][:].tolist() == [0, int(ImageStatus.SUPERSEDED), 0, 0]
    live = read_results(out)
    assert live.rows.tolist() == [0, 2, 3] and live.sha256[2] == "f" * 64
    everything = read_results(out, include_superseded=True)
    assert everything.rows.tolist() == [0, 1, 2, 3] and everything.status[1] == ImageStatus.SUPERSEDED


def test_supersede_before_the_new_row_leaves_the_path_uncommitted(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    with open_writer(out) as writer:
        writer.append(rows_for([0, 1]))
        writer.supersede([0])
        assert set(writer.committed()) == {image_path(1)}  # a crash now: the path is redone


def test_a_duplicate_left_by_a_kill_before_supersede_is_resolved_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    writer = open_writer(out)
    writer.append(rows_for([0, 1]))
    changed = rows_for([0])
    changed.sha256 = ["e" * 64]
    writer.append(changed)  # the pipeline appends the new row, then supersedes; killed in between:
    writer.close(compact=False)
    assert read_results(out).rows.tolist() == [1, 2]  # readers already take the later row
    with open_writer(out, "resume") as writer:
        assert writer.committed()[image_path(0)] == CommittedRow(2, "e" * 64, int(ImageStatus.OK))
    with h5py.File(out, "r") as f:
        assert f["images/status"][:].tolist() == [int(ImageStatus.SUPERSEDED), 0, 0]


def test_growing_past_the_preallocated_capacity(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    with open_writer(out, expected_rows=10) as writer:
        for start in range(0, 2300, 100):
            writer.append(rows_for(list(range(start, start + 100))))
        with h5py.File(out, "r") as f:
            assert f["images/path"].shape[0] >= 2300 and f["images/path"].shape[0] % schema.CHUNK_ROWS == 0
    assert stored_paths(out) == [image_path(i) for i in range(2300)]


def test_non_ascii_paths_and_errors_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    names = ["Pro/WBC-Malignant-Pro-001.jpg", "été/ñandú 細胞 🧪.jpg", "Ω/a\u0301.JPG"]
    rows = rows_for([0, 1, 2])
    rows.paths = names
    rows.errors = ["", "décodage impossible: données tronquées", "壊れた画像"]
    with open_writer(out) as writer:
        writer.append(rows)
    table = read_results(out)
    assert table.paths.tolist() == names and table.errors.tolist() == rows.errors
    with h5py.File(out, "r") as f:
        assert f["images/path"][1] == names[1].encode("utf-8")  # stored as UTF-8 bytes


def test_stale_temporary_files_are_removed_on_open(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    stale = tmp_path / f".r.h5.{2**22 + 12345}.allbatch-tmp"  # a pid above pid_max: never running
    stale.write_bytes(b"half a file")
    write_images(out, [0])
    assert not stale.exists()


def test_malformed_batches_are_refused(tmp_path: Path) -> None:
    with open_writer(tmp_path / "r.h5") as writer:
        rows = rows_for([0, 1])
        rows.sha256 = ["abc", rows.sha256[1]]
        with pytest.raises(ValueError, match="sha256"):
            writer.append(rows)
        rows = rows_for([0, 1])
        rows.probs = rows.probs[:, :3]
        with pytest.raises(ValueError, match="inconsistent batch"):
            writer.append(rows)
        writer.append(rows_for([]))  # an empty batch is a no-op
        assert writer.n_committed == 0


def test_unreadable_rows_store_an_empty_sha(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    rows = rows_for([5])
    rows.sha256, rows.status = [""], np.array([ImageStatus.UNREADABLE], dtype=np.int8)
    with open_writer(out) as writer:
        writer.append(rows)
        assert writer.committed()[image_path(5)].sha256 == ""
    assert read_results(out).sha256.tolist() == [""]


def test_background_writer_appends_in_order(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    with open_writer(out) as writer:
        background = BackgroundWriter(writer, max_pending=2)
        for start in range(0, 300, 7):
            background.submit(rows_for(list(range(start, min(start + 7, 300)))))
        background.close()
        background.close()  # idempotent
        assert writer.n_committed == 300
    assert stored_paths(out) == [image_path(i) for i in range(300)]


class FailingWriter:
    """Stands in for a ResultsWriter whose disk fills up on the third batch."""

    def __init__(self) -> None:
        self.appended: list[int] = []
        self.release = threading.Event()

    def append(self, rows: ResultRows) -> None:
        self.release.wait(5)
        if len(self.appended) == 2:
            raise OSError(28, "No space left on device")
        self.appended.append(len(rows))


def test_background_writer_reraises_on_close(tmp_path: Path) -> None:
    failing = FailingWriter()
    background = BackgroundWriter(failing, max_pending=8)  # type: ignore[arg-type]
    for size in (1, 2, 3, 4):
        background.submit(rows_for(list(range(size))))
    failing.release.set()
    with pytest.raises(OSError, match="No space left"):
        background.close()
    assert failing.appended == [1, 2]  # batches before the failing one were committed, later ones dropped


def test_background_writer_reraises_on_the_next_submit(tmp_path: Path) -> None:
    failing = FailingWriter()
    failing.release.set()
    background = BackgroundWriter(failing, max_pending=1)  # type: ignore[arg-type]
    with pytest.raises(OSError, match="No space left"):
        for _ in range(50):  # never blocks forever on a dead consumer
            background.submit(rows_for([0]))
    with pytest.raises(OSError, match="No space left"):
        background.close()


def test_background_writer_with_a_real_writer_error_keeps_earlier_batches(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    writer = open_writer(out)
    background = BackgroundWriter(writer)
    background.submit(rows_for([0, 1]))
    bad = rows_for([2])
    bad.sha256 = ["not hex"]
    background.submit(bad)
    with pytest.raises(ValueError, match="sha256"):
        background.close()
    writer.close()
    assert stored_paths(out) == [image_path(0), image_path(1)]


def test_the_writer_refuses_work_after_close(tmp_path: Path) -> None:
    writer = open_writer(tmp_path / "r.h5")
    writer.close()
    writer.close()
    with pytest.raises(ResultsFileError, match="closed"):
        writer.append(rows_for([0]))


def test_provenance_may_not_use_reserved_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        ResultsWriter.open(tmp_path / "r.h5", mode="new", provenance={"runs": 3}, compat=COMPAT)


def test_large_provenance_values_are_kept(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    big = {"curve": list(range(20_000))}  # > 64 KiB of JSON, more than an attribute can hold
    with ResultsWriter.open(out, mode="new", provenance={"validation": big}, compat=COMPAT) as writer:
        writer.append(rows_for([0]))
    assert read_results(out).attrs["validation"] == big
    with open_writer(out, "resume") as writer:  # and it survives the rebuilds of a resume that adds nothing (kept)...
        pass
    assert read_results(out).attrs["validation"] == big
    with open_writer(out, "resume") as writer:  # ... and of one that adds a row (its own provenance)
        writer.append(rows_for([1]))
    assert read_results(out).attrs["model_manifest"]["name"] == "tiny"


def test_a_second_writer_on_the_same_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    with open_writer(out) as writer:
        writer.append(rows_for([0]))
        with pytest.raises(UserInputError, match=rf"another allbatch run \(pid {os.getpid()}\) is writing"):
            open_writer(out, "resume")
        writer.append(rows_for([1]))
    write_images(out, [2], mode="resume")  # free again once closed
    assert stored_paths(out) == [image_path(i) for i in range(3)]


def test_a_missing_output_folder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        open_writer(tmp_path / "nope" / "r.h5")


def test_no_temporary_file_is_left_after_a_clean_run(tmp_path: Path) -> None:
    write_images(tmp_path / "r.h5", [0, 1])
    assert sorted(os.listdir(tmp_path)) == ["r.h5"]
