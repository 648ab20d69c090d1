"""``allbatch export results.h5 --csv out.csv``: one table row per image for spreadsheet users."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from allbatch.errors import UserInputError


def export_command(
    results: Annotated[Path, typer.Argument(help="A results.h5 written by allbatch run.")],
    csv: Annotated[Path, typer.Option("--csv", help="CSV file to write.")],
) -> None:
    """Write the committed rows of RESULTS as CSV (superseded rows left out)."""
    from allbatch.results.csv_export import export_csv

    if not results.is_file():
        raise UserInputError(f"results file not found: {results}")
    n = export_csv(results, csv)
    typer.echo(f"{n} rows -> {csv}")
