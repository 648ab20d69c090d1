"""``allbatch bench [SRC]``: throughput per stage, infer-only, end to end and a naive baseline (thin:
builds a BenchConfig, calls ``allbatch.bench.run_bench``, writes the report)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from allbatch.cli.console import make_console, print_warning
from allbatch.errors import UserInputError


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """Parse "8,32,128" into (8, 32, 128); raises UserInputError for anything else."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise UserInputError(f"--batch-sizes must be comma-separated integers, got {text!r}") from exc
    if not sizes or min(sizes) < 1:
        raise UserInputError(f"--batch-sizes must be positive integers, got {text!r}")
    return tuple(dict.fromkeys(sizes))


def bench_command(
    src: Annotated[
        Path | None,
        typer.Argument(help="Image folder (default: the dataset's Original folder if present, else the demo images).", show_default=False),
    ] = None,
    model: Annotated[Path | None, typer.Option(help="ONNX model with its .json manifest (default: the shipped model).")] = None,
    backend: Annotated[str, typer.Option(help="auto | onnxruntime | torch | tensorrt")] = "auto",
    decoder: Annotated[str, typer.Option(help="auto | cpu | dali (GPU) | dali-cpu")] = "auto",
    precision: Annotated[str, typer.Option(help="fp16 | fp32 (torch and TensorRT; ONNX Runtime computes in fp32)")] = "fp16",
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="Comma-separated batch sizes to sweep.")] = "8,32,128",
    repeats: Annotated[int, typer.Option(help="Timed repeats per measurement (median and spread reported).")] = 3,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up passes before the timed ones.")] = 1,
    limit: Annotated[int | None, typer.Option(help="Benchmark at most this many images (spread over the folder).")] = None,
    baseline: Annotated[
        bool | None,
        typer.Option(
            "--baseline/--no-baseline",
            help="Also time the naive per-image baseline (needs torch and OpenCV; default: when they are installed).",
            show_default=False,
        ),
    ] = None,
    decode_threads: Annotated[int, typer.Option(help="Decode threads of the pipeline's preparer.")] = 2,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the report here (plus -stages.png and -batch-sweep.png beside it).")
    ] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write the PNG plots beside the JSON.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary table.")] = False,
) -> None:
    """Measure images/s per stage (read, decode, segment, assemble, infer, write), infer-only and end to end
    per batch size, against the naive per-image baseline on the same images and model."""
    from allbatch.bench import BenchConfig, run_bench
    from allbatch.bench.baseline import baseline_unavailable_reason
    from allbatch.bench.report import summary_table, write_report

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
        decode_threads=decode_threads,
        argv=["allbatch", *sys.argv[1:]],
    )
    console = make_console(quiet=quiet)
    with console.status("benchmarking") as status:
        doc = run_bench(config, progress=lambda message: status.update(f"benchmarking: {message}"))
    console.print(summary_table(doc))
    if json_out is None:
        typer.echo(json.dumps(doc, indent=1))
        return
    if plots and importlib.util.find_spec("matplotlib") is None:  # plots are optional: the core install has no matplotlib
        print_warning(
            "no plots: matplotlib is not installed (pip install matplotlib, or pip install 'allbatch[bench]'); writing the JSON only"
        )
        plots = False
    for path in write_report(doc, json_out, plots=plots):
        console.print(f"wrote {path}", highlight=False)
