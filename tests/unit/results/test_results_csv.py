"""export_csv: columns, names, number format, superseded and uncommitted rows left out."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from results_crash_support import COMPAT, expected_row, rows_for

from allbatch import CLASS_NAMES
from allbatch.core.errors import ResultsFileError
from allbatch.core.status import ImageStatus
from allbatch.qc.flags import QcFlag
from allbatch.results.csv_export import export_csv
from allbatch.results.writer import ResultsWriter


def test_csv_has_one_row_per_live_image(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    with ResultsWriter.open(out, mode="new", provenance={}, compat=COMPAT) as writer:
        first = rows_for([0, 1, 5, 6])  # image 5 is a decode error
        junk = int(QcFlag.BLURRED | QcFlag.COLOUR | QcFlag.OUTLIER)  # 35: what a plain grey picture gets
        first.qc = {"flags": np.array([junk, int(QcFlag.BLURRED | QcFlag.OUTLIER), 0, int(QcFlag.UNCERTAIN)], dtype=np.uint16)}
        writer.append(first)
        changed = rows_for([1])
        changed.sha256 = ["c" * 64]
        writer.append(changed)
        writer.supersede([1])
    target = tmp_path / "r.csv"
    assert export_csv(out, target) == 4
    with target.open(newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    header, rows = lines[0], lines[1:]
    assert header == [
        "path",
        "sha256",
        "status",
        "error",
        "predicted",
        "confidence",
        "flags",
        "reason",
        "flag_names",
        "counted_as",
        *[f"p_{c}" for c in CLASS_NAMES],
        "mask_fraction",
    ]
    assert [row[0] for row in rows] == [expected_row(i)[0] for i in (0, 5, 6, 1)]  # file order, old row 1 left out
    assert rows[3][1] == "c" * 64
    path, sha, _, _, probs, label, fraction = expected_row(0)
    assert rows[0][:5] == [path, sha, "ok", "", CLASS_NAMES[label]]
    # the flags in words, and the image counted as "not a smear" (its predicted label stays beside it)
    assert np.float32(rows[0][5]) == probs.max() and rows[0][6:10] == ["35", "blurred", "blurred;colour;outlier", "not a smear"]
    np.testing.assert_array_equal(np.array(rows[0][10:14], dtype=np.float32), probs)  # reads back bit-exact
    assert np.float32(rows[0][14]) == np.float32(fraction)
    _, _, _, _, _, label6, _ = expected_row(6)
    assert rows[2][6:10] == [str(int(QcFlag.UNCERTAIN)), "uncertain", "uncertain", CLASS_NAMES[label6]]  # doubtful, still counted
    assert rows[3][6:10] == ["0", "ok", "", CLASS_NAMES[expected_row(1)[5]]]  # the new row of image 1: its own flags, not the old row's
    failed = rows[1]
    assert failed[2] == ImageStatus.DECODE_ERROR.name.lower() and failed[3] == expected_row(5)[3]
    assert failed[4:10] == ["", "", "0", "failed", "", ""] and failed[10:] == ["", "", "", "", ""]  # no label, NaN written as empty
    assert "ünïcode-細胞" in target.read_text(encoding="utf-8")


def test_csv_of_an_empty_results_file(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    with ResultsWriter.open(out, mode="new", provenance={}, compat=COMPAT):
        pass
    assert export_csv(out, tmp_path / "r.csv") == 0
    assert (
        (tmp_path / "r.csv")
        .read_text()
        .startswith("path,sha256,status,error,predicted,confidence,flags,reason,flag_names,counted_as,p_Benign")
    )


def test_csv_refuses_a_non_results_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.h5"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(ResultsFileError, match="not an HDF5 file"):
        export_csv(bad, tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize("lead", ["=", "+", "-", "@", "\t", "\r"])
def test_formula_cells_are_neutralised(tmp_path: Path, lead: str) -> None:
    out = tmp_path / "r.h5"
    rows = rows_for([0, 5])
    rows.paths = [f'{lead}HYPERLINK("http://x","y").jpg', f"{lead}cmd|' /C calc'!A0.jpg"]
    rows.errors[1] = f"{lead}1+1"
    with ResultsWriter.open(out, mode="new", provenance={}, compat=COMPAT) as writer:
        writer.append(rows)
    target = tmp_path / "r.csv"
    export_csv(out, target)
    with target.open(newline="", encoding="utf-8") as handle:
        body = list(csv.reader(handle))[1:]
    assert [row[0] for row in body] == ["'" + p for p in rows.paths]
    assert body[1][3] == f"'{lead}1+1"
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for row in body for cell in row)


def test_ordinary_cells_are_unchanged(tmp_path: Path) -> None:
    from allbatch.core.csv_table import neutralise

    assert neutralise("Benign/img-1.jpg") == "Benign/img-1.jpg"
    assert neutralise("a=b.jpg") == "a=b.jpg"
    assert neutralise("") == ""
