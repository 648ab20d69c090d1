"""Every CSV allbatch writes goes through ``write_csv``: one rule for spreadsheet safety, one way to write.

- Text cells are neutralised (``neutralise``): a cell that starts with = + - @ tab or CR gets a leading
  apostrophe, so that no spreadsheet runs it as a formula (the OWASP CSV-injection rule). File and folder names
  are untrusted text: a folder named ``=HYPERLINK("http://x","y")`` must stay a name.
- Numbers are written as numbers: a float so that it reads back to the same float32 ("" for NaN), an int as is.
  A negative number is a value, not a formula, and is not touched.
- The file is replaced atomically (``atomic_file.replacing``): a full disk or a read-only folder ends in one
  line (OutputWriteError) and leaves the previous file, if any, as it was; never a truncated CSV.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from allbatch.core.atomic_file import replacing

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
"""Leading characters that make Excel, LibreOffice or Google Sheets evaluate a cell (OWASP CSV injection)."""
Cell = str | int | float | None


def neutralise(text: str) -> str:
    """A text cell that no spreadsheet runs as a formula: one starting with = + - @ tab or CR gets a
    leading apostrophe (the OWASP rule; spreadsheets show the rest as text)."""
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


def csv_number(value: float) -> str:
    """float32 printed so that it reads back to the same float32; "" for NaN (failed images)."""
    return "" if math.isnan(value) else f"{value:.9g}"


def csv_cell(value: Cell) -> str | int:
    """One cell as written: text neutralised, a float by ``csv_number``, an int as is, None as ""."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return csv_number(value)
    return neutralise(str(value))


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Cell]]) -> int:
    """Replace ``path`` by a UTF-8 CSV of ``header`` and ``rows`` (every cell through ``csv_cell``); return the
    number of data rows. OutputWriteError (one line) when the file cannot be written; ``path`` is then unchanged."""
    count = 0
    with replacing(Path(path)) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([csv_cell(name) for name in header])
        for row in rows:
            writer.writerow([csv_cell(value) for value in row])
            count += 1
    return count
