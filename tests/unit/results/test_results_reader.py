"""read_results: committed rows only, superseded handling, decoded attributes, clear errors."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from results_crash_support import COMPAT, expected_row, image_path, rows_for

from allbatch import CLASS_NAMES
from allbatch.core.errors import ResultsFileError
from allbatch.core.status import ImageStatus
from allbatch.results.reader import read_results
from allbatch.results.writer import ResultsWriter


def write(path: Path, indices: list[int]) -> None:
    with ResultsWriter.open(path, mode="new", provenance={"argv": ["x"], "device": "cpu"}, compat=COMPAT) as writer:
        writer.append(rows_for(indices))


def test_reads_every_column_of_the_committed_rows(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    write(out, list(range(20)))
    table = read_results(out)
    assert len(table) == 20 and table.rows.tolist() == list(range(20))
    assert table.class_names == list(CLASS_NAMES)
    for i in range(20):
        path, sha, status, error, probs, label, fraction = expected_row(i)
        assert (table.paths[i], table.sha256[i], int(table.status[i]), table.errors[i], int(table.labels[i])) == (
            path,
            sha,
            status,
            error,
            label,
        )
        np.testing.assert_array_equal(table.probs[i], probs)
        np.testing.assert_array_equal(table.mask_fraction[i], np.float32(fraction))
    assert table.probs.dtype == np.float32 and table.probs.shape == (20, 4)
    assert table.status.dtype == np.int8 and table.labels.dtype == np.int8
    assert table.attrs["argv"] == ["x"] and table.attrs["device"] == "cpu" and table.attrs["compat"] == COMPAT
    assert np.isnan(table.probs[5]).all() and table.labels[5] == -1  # image 5 is a decode error


def test_ignores_rows_past_n_committed_in_a_working_file(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    writer = ResultsWriter.open(out, mode="new", provenance={}, compat=COMPAT, expected_rows=50)
    writer.append(rows_for([0, 1]))
    writer.close(compact=False)
    with h5py.File(out, "r") as f:
        assert f["images/path"].shape[0] > 2  # preallocated
    assert read_results(out).paths.tolist() == [image_path(0), image_path(1)]


def test_superseded_rows_only_on_request(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    with ResultsWriter.open(out, mode="new", provenance={}, compat=COMPAT) as writer:
        writer.append(rows_for([0, 1, 2]))
        writer.append(rows_for([1]))
        writer.supersede([1])
    assert read_results(out).rows.tolist() == [0, 2, 3]
    everything = read_results(out, include_superseded=True)
    assert everything.rows.tolist() == [0, 1, 2, 3]
    assert everything.status.tolist() == [0, int(ImageStatus.SUPERSEDED), 0, 0]


def test_a_file_that_is_not_hdf5(tmp_path: Path) -> None:
    bad = tmp_path / "results.h5"
    bad.write_text("path,status\na.jpg,ok\n")
    with pytest.raises(ResultsFileError, match="not an HDF5 file"):
        read_results(bad)


def test_an_hdf5_file_that_is_not_a_results_file(tmp_path: Path) -> None:
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["images/path"] = np.array([b"a"])
    with pytest.raises(ResultsFileError, match="not an allbatch results file"):
        read_results(other)


def test_a_results_file_with_a_newer_schema(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    write(out, [0])
    with h5py.File(out, "r+") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(ResultsFileError, match="schema version 99"):
        read_results(out)


def test_a_missing_file_and_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ResultsFileError, match="not found"):
        read_results(tmp_path / "absent.h5")
    with pytest.raises(ResultsFileError, match="folder"):
        read_results(tmp_path)
