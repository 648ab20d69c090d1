"""The pipeline's own measurements: the serial stage breakdown, inference on resident tensors, and the
real job end to end. Each function runs one ``MeasureSpec`` in the current process and returns
JSON-serialisable raw timings (seconds per timed repeat); ``runner`` turns them into statistics.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from allbatch import CLASS_NAMES
from allbatch.backends.base import Backend, InferenceOutput
from allbatch.bench.spec import STAGES, MeasureSpec, warmup_count
from allbatch.bench.timing import StageClock, device_synchronizer
from allbatch.decode import DecodeFailure, decode_rgb
from allbatch.discover import DiscoveredFile, discover
from allbatch.errors import UserInputError
from allbatch.manifest import ModelArtifact, load_model_artifact
from allbatch.pipeline import RunConfig, RunProgress, compat_key, make_preparer, rows_for, run
from allbatch.preprocess import blank_bottom_band, normalise_pair, resize_rgb
from allbatch.read import read_encoded
from allbatch.records import EncodedImage, PreparedBatch, Preparer
from allbatch.segment import segment
from allbatch.status import ImageStatus

log = logging.getLogger("allbatch.bench")

FUSED_DALI_STAGES = ("segment", "assemble")
"""With a DALI decoder, decode, segment and assemble are one graph: their time is reported under decode."""


def _files(spec: MeasureSpec) -> list[DiscoveredFile]:
    files = discover(Path(spec.images))
    if not files:
        raise UserInputError(f"no images under {spec.images}")
    return files


def _run_config(spec: MeasureSpec, source: Path, output: Path) -> RunConfig:
    return RunConfig(
        source=source,
        output=output,
        model=Path(spec.model),
        backend=spec.backend,
        decoder=spec.decoder,
        batch_size=spec.batch_size,
        mode="overwrite",
        decode_threads=spec.decode_threads,
        argv=["allbatch", "bench", f"--batch-sizes={spec.batch_size}"],
        infer_chunk_seconds=None,  # whole batches: the sweep measures the batch size it names
    )


def _create_backend(spec: MeasureSpec, artifact: ModelArtifact) -> Backend:
    from allbatch.backends.select import create_backend

    return create_backend(spec.backend, artifact, max_batch=spec.batch_size, precision=spec.precision)


def _prepare_serial(images: list[EncodedImage], artifact: ModelArtifact, clock: StageClock) -> PreparedBatch:
    """The CPU preparer's work (``cpu_prepare.prepare_one``) split into timed stages, on this thread."""
    prep, seg = artifact.manifest.prep, artifact.manifest.seg
    with clock.time("decode"):
        decoded: list[npt.NDArray[np.uint8] | None] = []
        for image in images:
            if image.data is None or image.status != ImageStatus.OK:
                decoded.append(None)
                continue
            try:
                decoded.append(blank_bottom_band(decode_rgb(image.data), prep))
            except DecodeFailure as failure:
                image.status, image.error = failure.status, str(failure)
                decoded.append(None)
    with clock.time("segment"):
        segmented = [None if rgb is None else segment(rgb, seg) for rgb in decoded]
        fractions = np.array([np.nan if s is None else float(s[1].mean()) for s in segmented], dtype=np.float32)
    with clock.time("assemble"):
        pairs = [
            normalise_pair(resize_rgb(rgb, prep.size), resize_rgb(s[0], prep.size), prep)
            for rgb, s in zip(decoded, segmented, strict=True)
            if rgb is not None and s is not None
        ]
        inputs = np.stack(pairs) if pairs else np.zeros((0, 2, 3, prep.size, prep.size), dtype=np.float32)
    return PreparedBatch(images=images, inputs=inputs, mask_fraction=fractions)


def _prepare(images: list[EncodedImage], artifact: ModelArtifact, preparer: Preparer | None, clock: StageClock) -> PreparedBatch:
    if preparer is None:
        return _prepare_serial(images, artifact, clock)
    with clock.time("decode"):  # one DALI graph: decode + segment + assemble
        return preparer.prepare(images)


def _stage_pass(
    files: list[DiscoveredFile],
    spec: MeasureSpec,
    artifact: ModelArtifact,
    backend: Backend,
    preparer: Preparer | None,
    clock: StageClock,
) -> list[list[float] | None]:
    """One pass over ``files``; returns each image's probabilities (None for a failed image)."""
    from allbatch.results.writer import ResultsWriter

    probs_out: list[list[float] | None] = []
    provenance = {"argv": ["allbatch", "bench"], "input_root": spec.images, "backend": backend.name, "decoder": spec.decoder}
    output = Path(spec.workdir) / f"stages-b{spec.batch_size}.h5"
    with ExitStack() as stack:
        writer = stack.enter_context(
            ResultsWriter.open(output, mode="overwrite", provenance=provenance, compat=compat_key(artifact), expected_rows=len(files))
        )
        for start in range(0, len(files), spec.batch_size):
            chunk = files[start : start + spec.batch_size]
            with clock.time("read"):
                images = [read_encoded(start + offset, item) for offset, item in enumerate(chunk)]
            batch = _prepare(images, artifact, preparer, clock)
            with clock.time("infer"):
                inferred = backend.infer(batch.inputs) if batch.ok_positions else InferenceOutput.empty(len(CLASS_NAMES), 0)
            rows = rows_for(batch, inferred)
            with clock.time("write"):
                writer.append(rows)
            probs_out.extend(None if math.isnan(float(row[0])) else [float(v) for v in row] for row in rows.probs)
        with clock.time("write"):  # the final flush and close are part of writing
            stack.close()
    return probs_out


def measure_stages(spec: MeasureSpec) -> dict[str, Any]:
    """Serial stage breakdown: every stage of every batch timed on this thread, one after another.

    Returns ``{"seconds": {stage: [one total per timed repeat]}, "images": n, "probs": [...], ...}``.
    The decode/segment/assemble split exists on the CPU decoder; with DALI those three are one graph,
    timed as ``decode`` (``fused_into_decode`` lists the others).
    """
    files = _files(spec)
    artifact = load_model_artifact(Path(spec.model))
    clock_sync = device_synchronizer(spec.on_gpu)
    seconds: dict[str, list[float]] = {stage: [] for stage in STAGES}
    probs: list[list[float] | None] = []
    with _create_backend(spec, artifact) as backend:
        preparer = None
        if spec.decoder != "cpu":
            preparer = make_preparer(spec.decoder, artifact, _run_config(spec, Path(spec.images), Path(spec.workdir) / "unused.h5"))
        try:
            for _ in range(spec.warmup):
                _stage_pass(files[: warmup_count(len(files), spec.batch_size)], spec, artifact, backend, preparer, StageClock(clock_sync))
            for _ in range(spec.repeats):
                clock = StageClock(clock_sync)
                probs = _stage_pass(files, spec, artifact, backend, preparer, clock)
                for stage in STAGES:
                    seconds[stage].append(clock.seconds.get(stage, 0.0))
        finally:
            if preparer is not None:
                preparer.close()
        details = backend.describe()
        device = backend.device
    return {
        "images": len(files),
        "seconds": seconds,
        "fused_into_decode": list(FUSED_DALI_STAGES) if spec.decoder != "cpu" else [],
        "probs": probs,
        "backend_device": device,
        "backend_details": details,
    }


def _resident_batch(spec: MeasureSpec, artifact: ModelArtifact, files: list[DiscoveredFile], backend_name: str) -> Any:
    """A real (batch_size, 2, 3, S, S) float32 batch placed where the backend computes (host or CUDA)."""
    from allbatch.cpu_prepare import PillowPreparer

    manifest = artifact.manifest
    preparer = PillowPreparer(manifest.prep, manifest.seg, threads=spec.decode_threads)
    try:
        chunk = files[: spec.batch_size]
        prepared = preparer.prepare([read_encoded(i, item) for i, item in enumerate(chunk)])
    finally:
        preparer.close()
    if prepared.inputs.shape[0] == 0:
        raise UserInputError(f"none of the first {len(chunk)} images under {spec.images} could be decoded")
    # Fewer images than the batch: repeat them (the content does not change the arithmetic).
    host = np.ascontiguousarray(np.resize(prepared.inputs, (spec.batch_size, *prepared.inputs.shape[1:])))
    if backend_name == "onnxruntime":
        return host
    import torch

    return torch.from_numpy(host).to("cuda")


def measure_infer_only(spec: MeasureSpec) -> dict[str, Any]:
    """The backend alone on a resident batch: ceil(n / batch) calls per repeat, synchronised around them.

    Returns ``{"seconds": [per repeat], "images": calls * batch_size, ...}``.
    """
    files = _files(spec)
    artifact = load_model_artifact(Path(spec.model))
    sync = device_synchronizer(spec.on_gpu)
    calls = math.ceil(len(files) / spec.batch_size)
    seconds: list[float] = []
    with _create_backend(spec, artifact) as backend:
        batch = _resident_batch(spec, artifact, files, backend.name)
        for _ in range(spec.warmup):
            for _ in range(min(calls, 2)):
                backend.infer(batch)
        for _ in range(spec.repeats):
            sync()
            started = time.perf_counter()
            for _ in range(calls):
                backend.infer(batch)
            sync()
            seconds.append(time.perf_counter() - started)
        details = backend.describe()
        device = backend.device
    return {"images": calls * spec.batch_size, "calls": calls, "seconds": seconds, "backend_device": device, "backend_details": details}


def _warmup_folder(spec: MeasureSpec, files: list[DiscoveredFile]) -> Path:
    """A folder with copies of the first images (one warm-up pass of the real job)."""
    folder = Path(spec.workdir) / f"warmup-b{spec.batch_size}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for index, item in enumerate(files[: warmup_count(len(files), spec.batch_size)]):
        shutil.copyfile(item.path, folder / f"{index:06d}-{item.path.name}")
    return folder


def measure_end_to_end(spec: MeasureSpec) -> dict[str, Any]:
    """``allbatch.pipeline.run`` into a temporary results.h5 (overwritten by every pass).

    Three clocks per repeat: ``run_seconds`` is the pipeline's own (every image, from the loaded model
    to the closed results file); ``wall_seconds`` covers the whole call (model loading and session
    creation too); ``steady_seconds`` starts when the first batch has been handed to the writer and
    ends when the call returns, covering ``steady_images`` (all but the first batch).
    """
    files = _files(spec)
    output = Path(spec.workdir) / f"end-to-end-b{spec.batch_size}.h5"
    if spec.warmup:
        warm = _warmup_folder(spec, files)
        for _ in range(spec.warmup):
            run(_run_config(spec, warm, output))
        shutil.rmtree(warm)
    wall: list[float] = []
    run_seconds: list[float] = []
    steady: list[float] = []
    steady_images = 0
    summary = None
    for _ in range(spec.repeats):
        marks: list[tuple[float, int]] = []

        def on_progress(progress: RunProgress, marks: list[tuple[float, int]] = marks) -> None:
            marks.append((time.perf_counter(), progress.handled))

        started = time.perf_counter()
        summary = run(_run_config(spec, Path(spec.images), output), on_progress)
        ended = time.perf_counter()
        wall.append(ended - started)
        run_seconds.append(summary.seconds)
        if len(marks) > 1:
            first_time, first_done = marks[0]
            steady.append(ended - first_time)
            steady_images = summary.processed - first_done
    assert summary is not None  # repeats >= 1 is checked by the runner
    return {
        "images": summary.processed,
        "run_seconds": run_seconds,
        "wall_seconds": wall,
        "steady_seconds": steady,
        "steady_images": steady_images,
        "summary": summary.to_dict(),
    }
