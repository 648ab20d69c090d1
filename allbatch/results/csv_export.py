"""Export the live committed rows of a results.h5 as CSV, one row per image."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from allbatch.core.errors import UserInputError
from allbatch.core.status import status_name
from allbatch.qc.flags import reason
from allbatch.results.reader import read_results

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
"""Leading characters that make Excel, LibreOffice or Google Sheets evaluate a cell (OWASP CSV injection)."""


def neutralise(text: str) -> str:
    """A text cell that no spreadsheet runs as a formula: one starting with = + - @ tab or CR gets a
    leading apostrophe (the OWASP rule; spreadsheets show the rest as text)."""
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


def csv_number(value: float) -> str:
    """float32 printed so that it reads back to the same float32; "" for NaN (failed images)."""
    return "" if math.isnan(value) else f"{value:.9g}"


def export_csv(results: Path, out: Path) -> int:
    """Write ``out`` (UTF-8, header line first) from ``results``; return the number of data rows.

    Columns: path, sha256, status (name, e.g. ``ok``), error, predicted (class name, "" for a failed
    image), confidence (its probability), flags (the /qc/flags bits as an integer), reason (one word:
    "ok", the first quality flag, or "failed"), p_<Class> for each class, mask_fraction. Superseded rows
    and rows past n_committed are left out. Text cells (file names and errors included) go through
    ``neutralise``, so a file named ``=HYPERLINK(...).jpg`` appears as ``'=HYPERLINK(...).jpg``.
    ResultsFileError for a file that is not a results file.
    """
    table = read_results(Path(results))
    out = Path(out)
    if out.is_dir():
        raise UserInputError(f"--csv {out} is a folder")
    header = [
        "path",
        "sha256",
        "status",
        "error",
        "predicted",
        "confidence",
        "flags",
        "reason",
        *[f"p_{name}" for name in table.class_names],
        "mask_fraction",
    ]
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i in range(len(table)):
            label = int(table.labels[i])
            writer.writerow(
                [
                    neutralise(str(table.paths[i])),
                    table.sha256[i],
                    status_name(int(table.status[i])),
                    neutralise(str(table.errors[i])),
                    neutralise(table.class_names[label]) if label >= 0 else "",
                    csv_number(float(table.probs[i, label])) if label >= 0 else "",
                    int(table.flags[i]),
                    neutralise(reason(int(table.flags[i]))) if label >= 0 else "failed",
                    *[csv_number(float(p)) for p in table.probs[i]],
                    csv_number(float(table.mask_fraction[i])),
                ]
            )
    return len(table)
