"""``allbatch bench [SRC]``: the real pipeline measured per stage, infer-only and end to end against the naive
per-image loop, in paired rounds (thin: builds a BenchConfig, calls ``allbatch.bench.run_bench``, writes JSON).
Targets and plots: ``python benchmarks/report.py OUT.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from allbatch.cli.console import make_console, print_warning
from allbatch.core.errors import UserInputError


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
    backend: Annotated[str, typer.Option(help="auto | onnxruntime | openvino | torch | tensorrt (chosen as `run` does)")] = "auto",
    decoder: Annotated[str, typer.Option(help="auto | cpu | dali (GPU) | dali-cpu")] = "auto",
    precision: Annotated[str, typer.Option(help="fp16 (the device's reduced precision: bf16 for openvino) | bf16 | fp32")] = "fp16",
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="Comma-separated batch sizes to sweep.")] = "8,32,128",
    repeats: Annotated[int, typer.Option(help="Timed paired rounds (median and spread reported).")] = 3,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up rounds on the first two batches.")] = 1,
    limit: Annotated[
        int | None,
        typer.Option(
            help="Benchmark this many images (spread over the folder; more than it holds repeats its files). "
            "Default: 4,096 on a GPU, the folder's images on the CPU."
        ),
    ] = None,
    baseline_limit: Annotated[
        int | None, typer.Option(help="Time the naive baseline on the first this many of them only (default: all).")
    ] = None,
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
    from allbatch.bench import BenchConfig, run_bench
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
    console = make_console(quiet=quiet)
    with console.status("benchmarking") as status:
        doc = run_bench(config, progress=lambda message: status.update(f"benchmarking: {message}"))
    console.print(summary_table(doc))
    if json_out is None:
        typer.echo(json.dumps(doc, indent=1))
        return
    console.print(f"wrote {write_json(doc, json_out)}", highlight=False)
