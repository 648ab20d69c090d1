"""The per-folder verdicts as CSV (``allbatch export --groups``)."""

from __future__ import annotations

from pathlib import Path

from allbatch.core.csv_table import write_csv
from allbatch.core.errors import UserInputError
from allbatch.results.reader import read_results
from allbatch.summarize.groups import groups_as_rows, summarize_groups


def export_groups_csv(results: Path, out: Path, group_by: str = "parent") -> int:
    """Write the per-folder verdicts of ``results`` (allbatch/summarize/groups.py) as CSV; return the folder count.

    Columns: folder, images, ok, failed, flagged, not_a_smear, usable, mean_p_<Class>, votes_<Class>, share_<Class>,
    benign_tail_p (the chance of at least the folder's ALL votes from a Benign folder; "" when not computed),
    verdict, rule (the rule with its rates, the same on every row).
    Written by ``core.csv_table.write_csv``, as the per-image CSV: folder names are neutralised (a folder named
    ``=HYPERLINK(...)`` or ``-x`` is text, not a formula) and the file is replaced atomically.
    """
    out = Path(out)
    if out.is_dir():
        raise UserInputError(f"--groups {out} is a folder")
    header, rows = groups_as_rows(summarize_groups(read_results(Path(results)), group_by))
    return write_csv(out, header, rows)
