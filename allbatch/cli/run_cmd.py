"""``allbatch run SRC --out results.h5``: the main job (thin: builds a RunConfig, calls the pipeline)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from allbatch.backends.select import BACKEND_NAMES
from allbatch.errors import UserInputError
from allbatch.pipeline import RunConfig, RunSummary, run

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
"""Eight development images (2 per class) shipped with the package; see demo/CITATION.md."""


def exit_code_for(summary: RunSummary) -> int:
    """0 when every image is ok, 3 when some failed (their rows say why)."""
    from allbatch.cli.app import EXIT_OK, EXIT_SOME_FAILED

    return EXIT_SOME_FAILED if summary.failed else EXIT_OK


def run_command(
    src: Annotated[Path | None, typer.Argument(help="Folder (searched recursively) or single image file.", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The results.h5 to write.")] = Path("results.h5"),
    model: Annotated[Path | None, typer.Option(help="ONNX model with its .json manifest beside it (default: the shipped model).")] = None,
    backend: Annotated[str, typer.Option(help="auto | onnxruntime | openvino | torch | tensorrt")] = "auto",
    decoder: Annotated[str, typer.Option(help="auto | cpu | dali (GPU) | dali-cpu")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images per inference batch.")] = 64,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an existing results file: committed unchanged files are skipped.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing results file.")] = False,
    symlinks: Annotated[str, typer.Option(help="follow | skip")] = "follow",
    demo: Annotated[bool, typer.Option("--demo", help="Run on the 8 images shipped with allbatch instead of SRC.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary line.")] = False,
    json_summary: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
) -> None:
    """Classify every image under SRC into results.h5 (class, probabilities, segmentation, provenance)."""
    if resume and overwrite:
        raise UserInputError("--resume and --overwrite exclude each other")
    if demo == (src is not None):
        raise UserInputError("give either SRC or --demo")
    if backend not in BACKEND_NAMES:
        raise UserInputError(f"unknown --backend {backend!r} ({', '.join(BACKEND_NAMES)})")
    if decoder not in ("auto", "cpu", "dali", "dali-cpu"):
        raise UserInputError(f"unknown --decoder {decoder!r} (auto, cpu, dali, dali-cpu)")
    if symlinks not in ("follow", "skip"):
        raise UserInputError(f"unknown --symlinks {symlinks!r} (follow, skip)")
    config = RunConfig(
        source=DEMO_DIR if demo else Path(str(src)),
        output=out,
        model=model,
        backend=backend,
        decoder=decoder,
        batch_size=batch_size,
        mode="resume" if resume else "overwrite" if overwrite else "new",
        symlinks="skip" if symlinks == "skip" else "follow",
        argv=list(sys.argv),
    )
    console = Console(stderr=True, quiet=quiet)
    if quiet:  # --quiet: warnings and errors only
        logging.getLogger("allbatch").setLevel(logging.WARNING)
    with Progress(
        TextColumn("[bold]allbatch[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} img/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=quiet,
    ) as bar:
        task = bar.add_task("images", total=None, rate="-")

        def on_progress(done: int, total: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            bar.update(task, completed=done, total=total, rate=f"{done / elapsed:.1f}" if elapsed > 0 else "-")

        summary = run(config, on_progress)
    for path, status, error in summary.failed_examples:
        console.print(f"[yellow]{status}[/] {path}: {error}", highlight=False)
    if summary.failed > len(summary.failed_examples):
        console.print(f"... and {summary.failed - len(summary.failed_examples)} more failed images (see /images/status)")
    console.print(
        f"ok {summary.ok} / failed {summary.failed} / skipped {summary.skipped} (already committed) / "
        f"{summary.images_per_second:.1f} img/s / {summary.backend} on {summary.device}, decoder {summary.decoder} -> {summary.output}",
        highlight=False,
    )
    if json_summary:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    raise typer.Exit(exit_code_for(summary))
