"""Row-by-row comparison of results files, generic over every per-row dataset (whatever other columns exist)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from allbatch.core.status import ImageStatus
from allbatch.results.merge import row_dataset_names
from allbatch.results.schema import FILE_STAT, INDEX, N_COMMITTED, PATH, ROW_CRC, STATUS, shadowed_rows


def row_columns(path: Path, *, by_index: bool = False) -> dict[str, np.ndarray]:
    """{dataset name: its live rows} for every per-row dataset: committed, neither superseded nor shadowed by a
    later row of the same path. ``by_index`` sorts them by /images/index."""
    with h5py.File(path, "r") as f:
        n = int(f[N_COMMITTED][0])
        columns = {name: f[name][:n] for name in row_dataset_names(f)}
    paths = [p.decode() if isinstance(p, bytes) else p for p in columns[PATH].tolist()]
    live = (columns[STATUS] != ImageStatus.SUPERSEDED) & ~shadowed_rows(paths, columns[STATUS])
    columns = {name: values[live] for name, values in columns.items()}
    if by_index:
        order = np.argsort(columns[INDEX], kind="stable")
        columns = {name: values[order] for name, values in columns.items()}
    return columns


OBSERVED_WHEN_READ = (FILE_STAT, ROW_CRC)
"""Columns that record when a run read the file, not what it found: a file read less than 2 s after it was
written gets an mtime of -1 (``read.file_stat``), so two runs over fresh test files may differ there, and
the row checksum covers the stat. Every reader verifies the checksums; the comparison leaves these out."""


def assert_same_rows(actual: Path, expected: Path, *, by_index: bool = False, float_atol: float = 0.0) -> None:
    """The same per-row datasets with the same values in every row: NaN equal to NaN, floats bit for bit
    unless ``float_atol`` (for runs whose batches were cut differently, e.g. after a resume); the columns
    ``OBSERVED_WHEN_READ`` only have to exist in both."""
    got, want = row_columns(actual, by_index=by_index), row_columns(expected, by_index=by_index)
    assert sorted(got) == sorted(want)
    for name, values in want.items():
        if name in OBSERVED_WHEN_READ:
            continue
        assert got[name].dtype == values.dtype and got[name].shape == values.shape, name
        if values.dtype.kind == "f" and float_atol:
            np.testing.assert_allclose(got[name], values, rtol=0, atol=float_atol, err_msg=name)  # NaN == NaN here
        elif values.dtype.kind == "f":
            np.testing.assert_array_equal(got[name], values, err_msg=name)  # NaN == NaN here
        else:
            assert (got[name] == values).all(), name
