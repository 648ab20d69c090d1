"""``allbatch export results.h5 --csv out.csv``: one table row per image for spreadsheet users."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from allbatch.cli.console import print_warning
from allbatch.errors import UserInputError


def export_command(
    results: Annotated[Path, typer.Argument(help="A results.h5 written by allbatch run.")],
    csv: Annotated[Path, typer.Option("--csv", help="CSV file to write.")],
    force: Annotated[bool, typer.Option("--force", "--overwrite", help="Replace the CSV file if it exists.")] = False,
) -> None:
    """Write the committed rows of RESULTS as CSV (superseded rows left out)."""
    from allbatch.results.csv_export import export_csv
    from allbatch.results.reader import incomplete_run_warning

    if not results.is_file():
        raise UserInputError(f"results file not found: {results}")
    if csv.is_dir():
        raise UserInputError(f"--csv {csv} is a folder; name a file, e.g. {csv / 'results.csv'}")
    if csv.exists() and not force:
        raise UserInputError(f"{csv} already exists; pass --force to replace it")
    warning = incomplete_run_warning(results)
    if warning:
        print_warning(warning)
    n = export_csv(results, csv)
    typer.echo(f"{n} rows -> {csv}")
