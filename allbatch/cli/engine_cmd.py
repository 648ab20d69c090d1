"""``allbatch engine build``: build (or find in the cache) the TensorRT engine of a model for this GPU (thin:
checks the options, calls ``TensorRTBackend``, prints what it did)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from allbatch.core.errors import BackendUnavailableError, UserInputError

engine_app = typer.Typer(
    help="TensorRT engines: built from the model's ONNX for this machine's GPU and cached (never committed).",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help, as the main app (no "<bool>" after flags)
)


@engine_app.command("build")
def build_command(
    model: Annotated[Path | None, typer.Option(help="ONNX model with its .json manifest (default: the shipped model).")] = None,
    precision: Annotated[str, typer.Option(help="fp16 (checked against fp32 on real images before use) | fp32")] = "fp16",
    max_batch: Annotated[int, typer.Option("--max-batch", help="Largest batch of the engine's optimisation profile.")] = 256,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Engine cache (default: $ALLBATCH_CACHE/engines or ~/.cache/allbatch/engines).")
    ] = None,
    check_images: Annotated[
        Path | None,
        typer.Option("--check-images", help="Folder of real images for the fp16 agreement check (default: the 8 shipped demo images)."),
    ] = None,
) -> None:
    """Build the TensorRT engine for MODEL on this GPU, or reuse the cached one; fp16 engines must agree with fp32."""
    from allbatch.backends.tensorrt_backend import TensorRTBackend, tensorrt_status
    from allbatch.model.manifest import load_model_artifact

    if precision not in ("fp16", "fp32"):
        raise UserInputError(f"--precision must be fp16 or fp32, got {precision!r}")
    if max_batch < 1:
        raise UserInputError(f"--max-batch must be at least 1, got {max_batch}")
    if check_images is not None and precision != "fp16":
        raise UserInputError("--check-images applies to --precision fp16 only")
    usable, reason = tensorrt_status()
    if not usable:
        raise BackendUnavailableError(f"engine build needs TensorRT on a CUDA GPU: {reason}")
    artifact = load_model_artifact(model)
    with TensorRTBackend(artifact, precision=precision, max_batch=max_batch, cache_dir=cache_dir, check_images=check_images) as backend:
        details = backend.describe()
    typer.echo(f"engine   {details['engine_path']}")
    typer.echo(f"key      {details['engine_digest']}: {precision}, batch 1..{max_batch}")
    typer.echo(f"on       {details['device']}, TensorRT {details['tensorrt_version']}")
    agreement = details.get("fp16_agreement")
    if agreement is not None:
        typer.echo(f"fp16     accepted: {agreement.get('reason', '')}")
