"""``allbatch report results.h5 -o report.html``: one self-contained HTML page for the lab."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from allbatch.cli.output_guard import ForceOption, check_writable_target
from allbatch.core.errors import UserInputError


def report_command(
    results: Annotated[Path, typer.Argument(help="A results.h5 written by allbatch run.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
    group_by: Annotated[str, typer.Option("--group-by", help="Folders for the verdicts: 'parent' or the first N folders.")] = "parent",
    images: Annotated[
        Path | None, typer.Option("--images", help="Where the images are now, if they moved since the run (default: the run's input root).")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="CSV of 'path or file name, class' rows: show the metrics against it (as allbatch eval --labels)."),
    ] = None,
    force: ForceOption = False,
) -> None:
    """Write a self-contained HTML report of RESULTS: provenance, counts, folder verdicts, flagged images, failures, metrics."""
    from allbatch.report.html import write_report
    from allbatch.summarize.groups import parse_group_by

    if not results.is_file():
        raise UserInputError(f"results file not found: {results}")
    check_writable_target(out, force=force, example="report.html")
    content, seconds = write_report(results, out, group_by=parse_group_by(group_by), image_root=images, labels_file=labels)
    size = out.stat().st_size
    typer.echo(f"report of {content.n_rows} images ({content.n_flagged} flagged) -> {out} ({size / 1e6:.2f} MB, {seconds:.1f} s)")
