"""``allbatch merge parts/*.h5 --out results.h5``: join a sharded run's part files (thin: calls results.merge)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def merge_command(
    parts: Annotated[list[Path], typer.Argument(help="The part files written with `allbatch run --shard K/N`.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The merged results.h5 to write.")] = Path("results.h5"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary line.")] = False,
    json_summary: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
) -> None:
    """Check that the parts cover one discovered list exactly once with one model, and write one results.h5."""
    from allbatch.results.merge import merge_parts

    summary = merge_parts(parts, out, overwrite=overwrite, argv=["allbatch", *sys.argv[1:]])
    Console(stderr=True, quiet=quiet).print(f"merged {summary.parts} parts, {summary.rows} rows -> {summary.output}", highlight=False)
    if json_summary:
        typer.echo(json.dumps(summary.__dict__, indent=2))
