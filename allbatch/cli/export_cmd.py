"""``allbatch export results.h5 --csv out.csv [--groups folders.csv]``: tables for spreadsheet users."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from allbatch.cli.console import print_warning
from allbatch.cli.output_guard import ForceOption, check_writable_target
from allbatch.core.errors import UserInputError


def export_command(
    results: Annotated[Path, typer.Argument(help="A results.h5 written by allbatch run.")],
    csv: Annotated[Path | None, typer.Option("--csv", help="CSV file to write: one row per image.")] = None,
    groups: Annotated[Path | None, typer.Option("--groups", help="CSV file to write: one row per folder, with its verdict.")] = None,
    group_by: Annotated[str, typer.Option("--group-by", help="Folders for --groups: 'parent' or the first N folders.")] = "parent",
    force: ForceOption = False,
) -> None:
    """Write the committed rows of RESULTS as CSV (superseded rows left out), and/or the per-folder verdicts."""
    from allbatch.results.csv_export import export_csv
    from allbatch.results.reader import incomplete_run_warning
    from allbatch.summarize.groups import parse_group_by
    from allbatch.summarize.groups_csv import export_groups_csv

    if csv is None and groups is None:
        raise UserInputError("give --csv PATH, --groups PATH or both")
    group_by = parse_group_by(group_by)
    if not results.is_file():
        raise UserInputError(f"results file not found: {results}")
    for target in (csv, groups):
        if target is not None:
            check_writable_target(target, force=force, example="results.csv")
    warning = incomplete_run_warning(results)
    if warning:
        print_warning(warning)
    if csv is not None:
        n = export_csv(results, csv)
        typer.echo(f"{n} rows -> {csv}")
    if groups is not None:
        n = export_groups_csv(results, groups, group_by)
        typer.echo(f"{n} folders -> {groups}")
