"""``allbatch merge parts/*.h5 --out results.h5``: join a sharded run's part files (``results.merge``), then
write the folder table of the merged rows (``summarize.groups_h5``), both under the output's lock."""

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
    group_by: Annotated[
        str | None,
        typer.Option(
            "--group-by",
            help="Folder verdicts per 'parent' folder or per first N folders (default: as the parts were run, else 'parent').",
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary line.")] = False,
    json_summary: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
) -> None:
    """Check that the parts cover one discovered list exactly once with one model, and write one results.h5."""
    from allbatch.results.lock import OutputLock
    from allbatch.results.merge import merge_parts
    from allbatch.summarize.groups import parse_group_by
    from allbatch.summarize.groups_h5 import group_by_of, store_groups

    chosen = None if group_by is None else parse_group_by(group_by)
    with OutputLock(out) as lock:  # one writing: the merged rows and their folder table
        summary = merge_parts(parts, out, overwrite=overwrite, argv=["allbatch", *sys.argv[1:]], lock=lock)
        if chosen is None:  # the parts' own choice (merge_parts checked that each part is a readable results file)
            chosen = next((found for found in map(group_by_of, parts) if found is not None), "parent")
        store_groups(out, chosen)
    Console(stderr=True, quiet=quiet).print(f"merged {summary.parts} parts, {summary.rows} rows -> {summary.output}", highlight=False)
    if json_summary:
        typer.echo(json.dumps(summary.__dict__, indent=2))
