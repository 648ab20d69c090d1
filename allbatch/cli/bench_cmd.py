"""``allbatch bench [SRC]``: the real pipeline measured per stage, infer-only and end to end against the naive
per-image loop, in paired rounds (thin: builds a BenchConfig, says which images and batch sizes it will use,
shows a progress bar, calls ``allbatch.bench.run_bench``, writes JSON). Targets and plots:
``python benchmarks/report.py OUT.json``. The defaults (16 images, batch 8 and 16, 2 rounds) finish in about
2 minutes on a loaded 2-core CPU with the shipped model; ``--limit`` and ``--repeats`` buy steadier figures."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from allbatch.cli.console import make_console, print_warning, stderr_is_terminal
from allbatch.core.errors import UserInputError

if TYPE_CHECKING:
    from allbatch.bench.runner import BenchProgress

log = logging.getLogger("allbatch.bench")


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """Parse "8,32,128" into (8, 32, 128); raises UserInputError for anything else."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise UserInputError(f"--batch-sizes must be comma-separated integers, got {text!r}") from exc
    if not sizes or min(sizes) < 1:
        raise UserInputError(f"--batch-sizes must be positive integers, got {text!r}")
    return tuple(dict.fromkeys(sizes))


@contextmanager
def bench_progress(console: Console, *, quiet: bool, terminal: bool) -> Iterator[Callable[[BenchProgress], None] | None]:
    """A transient bar over the images the benchmark puts through a network (every round, pass and baseline
    image), with the step in words, on a terminal; one log line per step otherwise; nothing when quiet."""
    if quiet:
        yield None
        return
    if not terminal:
        last_step = [""]

        def log_step(p: BenchProgress) -> None:
            if p.step != last_step[0]:
                last_step[0] = p.step
                log.info("bench %d/%d images: %s", p.done, p.total, p.step)

        yield log_step
        return
    bar = Progress(
        TextColumn("[bold]bench[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[step]}"),
        console=console,
        transient=True,
    )
    task = bar.add_task("images", total=None, step="loading the model")
    with bar:
        yield lambda p: bar.update(task, completed=p.done, total=p.total, step=p.step)


def bench_command(
    src: Annotated[
        Path | None,
        typer.Argument(help="Image folder (default: the dataset's Original folder if present, else the demo images).", show_default=False),
    ] = None,
    model: Annotated[Path | None, typer.Option(help="ONNX model with its .json manifest (default: the shipped model).")] = None,
    backend: Annotated[str, typer.Option(help="auto | onnxruntime | openvino | torch | tensorrt (chosen as `run` does)")] = "auto",
    decoder: Annotated[str, typer.Option(help="auto | cpu | dali (GPU) | dali-cpu")] = "auto",
    precision: Annotated[str, typer.Option(help="fp16 (the device's reduced precision: bf16 for openvino) | bf16 | fp32")] = "fp16",
    batch_sizes: Annotated[
        str, typer.Option("--batch-sizes", help="Comma-separated batch sizes to sweep (each capped at the number of images).")
    ] = "8,16",
    repeats: Annotated[int, typer.Option(help="Timed paired rounds (median and spread reported).")] = 2,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up rounds on one batch of the smallest size.")] = 1,
    limit: Annotated[
        int | None,
        typer.Option(
            help="Benchmark this many images, spread over the folder; more than the folder holds repeats its files "
            "(default: 16, or all of a smaller folder, on the CPU; 4,096 on a GPU).",
            show_default=False,
        ),
    ] = None,
    baseline_limit: Annotated[int, typer.Option(help="Time the naive baseline on the first this many of them only.")] = 8,
    baseline: Annotated[
        bool | None,
        typer.Option(
            "--baseline/--no-baseline",
            help="Also time the naive per-image baseline (needs torch and OpenCV; default: when they are installed).",
            show_default=False,
        ),
    ] = None,
    decode_threads: Annotated[int, typer.Option(help="Decode threads of the pipeline's preparer.")] = 2,
    prefetch_depth: Annotated[int, typer.Option(help="GPU path: DALI batches under way ahead of the producer (1: none).")] = 2,
    cuda_graphs: Annotated[bool, typer.Option("--cuda-graphs/--no-cuda-graphs", help="torch on CUDA: replay CUDA graphs.")] = True,
    torch_compile: Annotated[bool, typer.Option("--torch-compile/--no-torch-compile", help="torch: compile the forward.")] = False,
    fancy_upsampling: Annotated[
        bool, typer.Option("--fancy-upsampling/--no-fancy-upsampling", help="DALI on the GPU: upsample JPEG chroma as the CPU path does.")
    ] = True,
    overlap_infer: Annotated[
        bool, typer.Option("--overlap-infer/--no-overlap-infer", help="GPU: queue the next batch before writing this one.")
    ] = True,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report here (else print it on stdout).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary table.")] = False,
) -> None:
    """Measure images/s of the real pipeline: per stage (serial mode), infer-only and end to end per batch size,
    against the naive per-image baseline on the same images and model, in paired alternating rounds."""
    from allbatch.bench import BenchConfig, plan_bench, run_bench
    from allbatch.bench.baseline import baseline_unavailable_reason
    from allbatch.bench.report import summary_table, write_json
    from allbatch.run.config import GpuTuning

    baseline_missing = baseline_unavailable_reason() if baseline is not False else None
    if baseline_missing and baseline:  # asked for by name: refuse before any work
        raise UserInputError(f"--baseline cannot run here: {baseline_missing}")
    if baseline_missing:
        print_warning(f"no naive baseline: {baseline_missing}; the other measurements run")
    config = BenchConfig(
        source=src,
        model=model,
        backend=backend,
        decoder=decoder,
        precision=precision,
        batch_sizes=parse_batch_sizes(batch_sizes),
        repeats=repeats,
        warmup=warmup,
        limit=limit,
        baseline=bool(baseline is not False and not baseline_missing),
        baseline_limit=baseline_limit,
        decode_threads=decode_threads,
        argv=["allbatch", *sys.argv[1:]],
        tuning=GpuTuning(
            prefetch_depth=prefetch_depth,
            cuda_graphs=cuda_graphs,
            torch_compile=torch_compile,
            fancy_upsampling=fancy_upsampling,
            overlap_infer=overlap_infer,
        ),
    )
    plan = plan_bench(config)  # the images and batch sizes, said before the model loads
    console = make_console(quiet=quiet)
    for line in plan.describe():
        console.print(Text(line))
    allbatch_log = logging.getLogger("allbatch")
    levels = allbatch_log.level, log.level
    allbatch_log.setLevel(max(levels[0], logging.WARNING))  # every pipeline pass would log its backend choice again
    log.setLevel(logging.WARNING if quiet else logging.INFO)  # the bench's own step lines still reach the handler
    try:
        with bench_progress(console, quiet=quiet, terminal=stderr_is_terminal()) as on_progress:
            doc = run_bench(config, progress=on_progress, plan=plan)
    finally:
        allbatch_log.setLevel(levels[0])
        log.setLevel(levels[1])
    console.print(summary_table(doc))
    if json_out is None:
        typer.echo(json.dumps(doc, indent=1))
        return
    console.print(f"wrote {write_json(doc, json_out)}", highlight=False)
