"""``allbatch run SRC --out results.h5``: the main job (thin: builds a RunConfig, calls the pipeline)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from allbatch.backends.select import BACKEND_NAMES
from allbatch.cli.console import make_console, print_error, printable, stderr_is_terminal
from allbatch.cli.exit_codes import EXIT_OK, EXIT_SOME_FAILED
from allbatch.cli.progress import progress_reporter
from allbatch.cli.stop_signals import stop_on_signals
from allbatch.core.errors import UserInputError
from allbatch.input.shard import parse_shard
from allbatch.run.config import RunConfig
from allbatch.run.engine import run
from allbatch.run.tally import RunSummary
from allbatch.summarize.groups import parse_group_by
from allbatch.summarize.render import groups_table

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
"""Eight development images (2 per class) shipped with the package; see demo/CITATION.md."""


def exit_code_for(summary: RunSummary) -> int:
    """3 when files this run read failed (their rows say why), else 0: a ``--resume`` with nothing new exits 0
    although earlier failures stay in the summary, so ``run --resume && report`` works on an archive with a bad file."""
    return EXIT_SOME_FAILED if summary.failed_this_run else EXIT_OK


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
    shard: Annotated[
        str | None,
        typer.Option(
            help="K/N: only shard K (from 0) of N, a contiguous range of the discovered order; join the parts with `allbatch merge`."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Run N CPU worker processes, each a shard, merged into --out at the end (like --gpus, without GPUs); "
            "with --executor ray: N actors (default one per GPU, else per CPU, of the cluster)."
        ),
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option(help="all | 0,1,...: one worker process per GPU (CUDA_VISIBLE_DEVICES), each a shard, merged into --out at the end."),
    ] = None,
    executor: Annotated[
        str, typer.Option(help="local (this node: one process, or --workers/--gpus processes) | ray (a Ray cluster, see RAY_ADDRESS)")
    ] = "local",
    demo: Annotated[bool, typer.Option("--demo", help="Run on the 8 images shipped with allbatch instead of SRC.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary line.")] = False,
    json_summary: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
    group_by: Annotated[
        str, typer.Option("--group-by", help="Folder verdicts per 'parent' folder (a slide or patient) or per first N folders.")
    ] = "parent",
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
    if sum(option is not None for option in (shard, workers, gpus)) > 1:
        raise UserInputError("--shard, --workers and --gpus exclude each other")
    if executor not in ("local", "ray"):
        raise UserInputError(f"unknown --executor {executor!r} (local, ray)")
    if executor == "ray" and (shard is not None or gpus is not None):
        raise UserInputError("--executor ray takes the cluster's GPUs (one per actor) and writes every row: no --gpus or --shard")
    config = RunConfig(
        source=DEMO_DIR if demo else Path(str(src)),
        output=out,
        model=model,
        backend=backend,
        decoder=decoder,
        batch_size=batch_size,
        mode="resume" if resume else "overwrite" if overwrite else "new",
        symlinks="skip" if symlinks == "skip" else "follow",
        argv=["allbatch", *sys.argv[1:]],
        shard=None if shard is None else parse_shard(shard),
        group_by=parse_group_by(group_by),
    )
    console = make_console(quiet=quiet)
    if quiet:  # --quiet: warnings and errors only
        logging.getLogger("allbatch").setLevel(logging.WARNING)
    with stop_on_signals() as stop, progress_reporter(console, quiet=quiet, terminal=stderr_is_terminal()) as on_progress:
        if executor == "ray":
            from allbatch.run.ray_data import run_ray

            summary = run_ray(config, workers, on_progress, stop.event)
        elif workers is None and gpus is None:
            summary = run(config, on_progress, stop.event)
        else:
            from allbatch.run.local import cpu_slots, gpu_slots, run_local

            slots = cpu_slots(workers) if workers is not None else gpu_slots(str(gpus))
            summary = run_local(config, slots, on_progress, stop.event)
    groups = summary.groups  # written by the run under its lock; None for an interrupted run (not finished)
    if groups is not None:
        console.print(groups_table(groups))
    for path, status, error in summary.failed_examples:
        console.print(Text.assemble((status, "yellow"), f" {printable(path)}: {printable(error)}"))
    if summary.failed > len(summary.failed_examples):
        console.print(f"... and {summary.failed - len(summary.failed_examples)} more failed images (see /images/status)")
    for line in summary_lines(summary):
        console.print(Text(line))
    if json_summary:
        verdicts = groups.verdict_counts() if groups is not None else {}
        typer.echo(json.dumps({**summary.to_dict(), "verdicts": verdicts}, indent=2))
    if summary.interrupted:
        kept = (
            f"{summary.processed} images of this run are committed in {summary.output}" if summary.processed else "nothing new was written"
        )
        print_error(f"{kept}; re-run with --resume to continue ({stop.name})", prefix="interrupted")
        raise typer.Exit(stop.exit_code)
    raise typer.Exit(exit_code_for(summary))


def summary_lines(summary: RunSummary) -> list[str]:
    """The end-of-run summary: this run's work (rate over the images classified now), then every
    discovered file's outcome with the counts per predicted class."""
    skipped = f"; {summary.skipped} skipped (committed by an earlier run)" if summary.skipped else ""
    classes = ", ".join(f"{name} {count}" for name, count in summary.class_counts.items())
    earlier = f" ({summary.failed_this_run} in this run)" if summary.failed != summary.failed_this_run else ""
    if summary.not_a_smear:  # flagged small, blurred or off-colour: their labels are in the file, not in these totals
        classes += f"; not a smear {summary.not_a_smear}"
    return [
        f"this run: {summary.processed} images classified in {summary.seconds:.1f} s ({summary.images_per_second:.1f} img/s){skipped}; "
        f"{summary.backend} on {summary.device}, decoder {summary.decoder} -> {printable(summary.output)}",
        f"{summary.processed + summary.skipped} of {summary.discovered} images done: ok {summary.ok}, failed {summary.failed}{earlier}; "
        f"predicted: {classes or 'none'}",
    ]
