"""Every CSV allbatch writes is neutralised the same way (issue 24, point 7): hostile folder names in
``export --groups`` and file names in ``export --csv`` become text, never a spreadsheet formula."""

from __future__ import annotations

import csv
from pathlib import Path

from cli_support import allbatch
from results_crash_support import COMPAT, rows_for

from allbatch.results.writer import ResultsWriter

HOSTILE_FOLDERS = ['=HYPERLINK("evil.example","x")', "+1", "-2+3", "@SUM(A1)", "\tTab", "\rCR", "plain"]


def test_hostile_folder_and_file_names_are_neutralised_in_both_csv_files(tmp_path: Path) -> None:
    results = tmp_path / "r.h5"
    rows = rows_for(list(range(len(HOSTILE_FOLDERS))))
    rows.paths = [f"{folder}/{folder}.jpg" for folder in HOSTILE_FOLDERS]
    with ResultsWriter.open(results, mode="new", provenance={}, compat=COMPAT) as writer:
        writer.append(rows)
    groups, images = tmp_path / "groups.csv", tmp_path / "images.csv"
    allbatch("export", str(results), "--groups", str(groups), "--csv", str(images), check_code=0)
    with groups.open(newline="", encoding="utf-8") as handle:
        folders = [row[0] for row in list(csv.reader(handle))[1:]]
    with images.open(newline="", encoding="utf-8") as handle:
        paths = [row[0] for row in list(csv.reader(handle))[1:]]
    expected = sorted(name if name == "plain" else "'" + name for name in HOSTILE_FOLDERS)
    assert sorted(folders) == expected
    assert sorted(paths) == sorted(f"{name}/{name}.jpg" if name == "plain" else f"'{name}/{name}.jpg" for name in HOSTILE_FOLDERS)
