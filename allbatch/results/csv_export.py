"""Export the live committed rows of a results.h5 as CSV, one row per image."""

from __future__ import annotations

from pathlib import Path

from allbatch.core.csv_table import Cell, write_csv
from allbatch.core.errors import UserInputError
from allbatch.core.status import status_name
from allbatch.qc.flags import NOT_A_SMEAR_WORD, flag_words, is_not_a_smear, reason
from allbatch.results.reader import ResultsTable, read_results


def export_csv(results: Path, out: Path) -> int:
    """Write ``out`` (UTF-8, header line first) from ``results``; return the number of data rows.

    Columns: path, sha256, status (name, e.g. ``ok``), error, predicted (class name, "" for a failed
    image), confidence (its probability), flags (the /qc/flags bits as an integer), reason (one word:
    "ok", the first quality flag, or "failed"), flag_names (every set flag, e.g. ``blurred;colour;outlier``, ""
    when none), counted_as (the class the image counts for in every total, "not a smear" for an image flagged
    small, blurred or off-colour, "" for a failed one), p_<Class> for each class, mask_fraction. Superseded rows
    and rows past n_committed are left out. Written by ``core.csv_table.write_csv``: text cells (file names and
    errors included) are neutralised, so a file named ``=HYPERLINK(...).jpg`` appears as ``'=HYPERLINK(...).jpg``,
    and the file is replaced atomically. ResultsFileError for a file that is not a results file,
    OutputWriteError when ``out`` cannot be written (it is then unchanged).
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
        "flag_names",
        "counted_as",
        *[f"p_{name}" for name in table.class_names],
        "mask_fraction",
    ]
    return write_csv(out, header, (_row(table, i) for i in range(len(table))))


def _row(table: ResultsTable, i: int) -> list[Cell]:
    """Row ``i`` of ``table`` as ``export_csv`` writes it (text cells are neutralised by ``write_csv``)."""
    label = int(table.labels[i])
    flags = int(table.flags[i])
    counted_as = "" if label < 0 else NOT_A_SMEAR_WORD if is_not_a_smear(flags) else table.class_names[label]
    return [
        str(table.paths[i]),
        str(table.sha256[i]),
        status_name(int(table.status[i])),
        str(table.errors[i]),
        table.class_names[label] if label >= 0 else "",
        float(table.probs[i, label]) if label >= 0 else "",
        flags,
        reason(flags) if label >= 0 else "failed",
        ";".join(flag_words(flags)),
        counted_as,
        *[float(p) for p in table.probs[i]],
        float(table.mask_fraction[i]),
    ]
