"""The Ray executor's pieces that need no Ray: rows to a numpy batch and back, and the install hint."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

from allbatch.core.errors import BackendUnavailableError
from allbatch.results.rows import ResultRows
from allbatch.run.ray_data import _import_ray, rows_from_columns, rows_to_columns


def test_rows_survive_the_trip_through_a_numpy_batch() -> None:
    rows = ResultRows(
        paths=["a/1.jpg", "b/ü 2.png", "c.jpg"],
        sha256=["0" * 64, "", "f" * 64],
        status=np.array([0, 2, 0], dtype=np.int8),
        errors=["", "cannot read file: Permission denied", ""],
        probs=np.array([[0.1, 0.2, 0.3, 0.4], [np.nan] * 4, [0.7, 0.1, 0.1, 0.1]], dtype=np.float32),
        labels=np.array([3, -1, 0], dtype=np.int8),
        mask_fraction=np.array([0.25, np.nan, 0.5], dtype=np.float32),
        index=np.array([7, 8, 9], dtype=np.int64),
        file_stat=np.array([[10, 20, 30], [-1, -1, -1], [11, 21, 31]], dtype=np.int64),
        qc={"max_prob": np.array([0.4, np.nan, 0.7], dtype=np.float32), "size": np.array([[2, 3], [0, 0], [4, 5]], dtype=np.int32)},
    )
    columns = rows_to_columns(rows)
    flat = [spec.name for spec in dataclasses.fields(ResultRows) if spec.name != "qc"] + ["qc.max_prob", "qc.size"]
    assert sorted(columns) == sorted(flat)  # a dict field travels as one column per key
    back = rows_from_columns(columns, np.array([2, 0], dtype=np.int64))
    assert back.paths == ["c.jpg", "a/1.jpg"] and back.sha256 == ["f" * 64, "0" * 64] and back.errors == ["", ""]
    np.testing.assert_array_equal(back.probs, rows.probs[[2, 0]])
    np.testing.assert_array_equal(back.index, [9, 7])
    assert back.status.dtype == np.int8 and back.mask_fraction.dtype == np.float32
    np.testing.assert_array_equal(back.qc["max_prob"], rows.qc["max_prob"][[2, 0]])
    np.testing.assert_array_equal(back.qc["size"], [[4, 5], [2, 3]])


def test_missing_ray_is_a_one_line_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where the extra is not installed
    with pytest.raises(BackendUnavailableError, match=r"pip install 'allbatch\[ray\]'"):
        _import_ray()
