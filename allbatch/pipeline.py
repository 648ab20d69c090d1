"""The main job: discover -> read -> decode/segment/assemble -> infer -> write, streamed and overlapped.

Threads: a producer reads files and prepares batches (Pillow/NumPy on the CPU, DALI on the GPU) into a
bounded queue; the calling thread runs the backend; a background writer appends rows to results.h5.
Memory is bounded by the queue depths (a few batches), whatever the number of images.

``RunConfig.serial`` runs every stage in the calling thread, one after another (no overlap), and an optional
``StageTimer`` hook times each stage (off by default); ``allbatch bench`` measures the pipeline with both.
"""

from __future__ import annotations

import json
import logging
import platform
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np

from allbatch import CLASS_NAMES, __version__
from allbatch.backends.base import Backend, InferenceOutput
from allbatch.discover import DiscoveredFile, SymlinkPolicy, discover
from allbatch.errors import UserInputError
from allbatch.manifest import ModelArtifact, load_model_artifact
from allbatch.read import read_encoded
from allbatch.records import EncodedImage, PreparedBatch, Preparer
from allbatch.results.rows import ResultRows
from allbatch.stage_timer import StageTimer, timed
from allbatch.status import FAILED_STATUSES, ImageStatus

log = logging.getLogger("allbatch.pipeline")

WriteMode = Literal["new", "resume", "overwrite"]
QUEUE_DEPTH = 3
"""Prepared batches waiting for the backend: enough to hide decode jitter, small enough to bound memory."""


@dataclass
class RunConfig:
    """Everything ``allbatch run`` needs; built by the CLI, usable from Python."""

    source: Path
    output: Path
    model: Path | None = None
    backend: str = "auto"
    decoder: str = "auto"
    precision: str = "fp16"
    """``backends.select.PRECISIONS``: "fp16" is the device's reduced precision (checked against fp32 before use)."""
    batch_size: int = 64
    mode: WriteMode = "new"
    symlinks: SymlinkPolicy = "follow"
    decode_threads: int = 2
    argv: list[str] = field(default_factory=list)
    serial: bool = False
    """Read, prepare, infer and write one after another in the calling thread (no producer or writer thread):
    the benchmark's stage breakdown, whose stage times add up to the run's wall time."""


@dataclass
class RunSummary:
    """What a run did. ``ok``/``failed`` count every discovered file, including those skipped because an
    earlier run committed them (so a resumed run still reports failures); ``failed_examples`` lists at
    most 20 (path, status, error)."""

    output: str
    discovered: int
    processed: int
    skipped: int
    ok: int
    failed: int
    seconds: float
    backend: str
    decoder: str
    device: str
    failed_examples: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "images_per_second": round(self.images_per_second, 2)}


@dataclass
class _Work:
    """One prepared batch plus the older rows that its files replace (changed since the last run)."""

    batch: PreparedBatch
    superseded_rows: list[int]


ProgressCallback = Callable[[int, int], None]
"""Called with (images handled so far, images to handle) after each batch."""


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "allbatch": __version__}
    for dist in ("numpy", "h5py", "pillow", "onnx", "onnxruntime", "openvino", "torch", "cupy-cuda13x", "nvidia-dali-cuda130", "tensorrt"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def make_preparer(decoder: str, artifact: ModelArtifact, config: RunConfig) -> Preparer:
    """The decode/segment/assemble stage for a resolved decoder name ("cpu", "dali", "dali-cpu")."""
    manifest = artifact.manifest
    if decoder == "cpu":
        from allbatch.cpu_prepare import PillowPreparer

        return PillowPreparer(manifest.prep, manifest.seg, threads=config.decode_threads)
    from allbatch.gpu.dali_preparer import DaliPreparer

    return DaliPreparer(
        manifest.prep,
        manifest.seg,
        device="gpu" if decoder == "dali" else "cpu",
        max_batch=config.batch_size,
        num_threads=config.decode_threads,
    )


def compat_key(artifact: ModelArtifact) -> dict[str, str]:
    """What must match for a resume to append to an existing results file."""
    manifest = artifact.manifest
    return {
        "model_sha256": artifact.sha256,
        "preprocessing": json.dumps(manifest.preprocessing, sort_keys=True),
        "segmentation": json.dumps(manifest.segmentation, sort_keys=True),
    }


def rows_for(batch: PreparedBatch, output: InferenceOutput) -> ResultRows:
    """The results rows of one prepared batch: the backend's output for its n_ok decoded images spread over
    its n images (NaN probabilities and label -1 for failures)."""
    probs = output.probs
    n = len(batch.images)
    all_probs = np.full((n, len(CLASS_NAMES)), np.nan, dtype=np.float32)
    labels = np.full(n, -1, dtype=np.int8)
    ok = batch.ok_positions
    if ok:
        all_probs[ok] = probs
        labels[ok] = probs.argmax(axis=1).astype(np.int8)
    return ResultRows(
        paths=[image.relpath for image in batch.images],
        sha256=[image.sha256 for image in batch.images],
        status=np.array([int(image.status) for image in batch.images], dtype=np.int8),
        errors=[image.error for image in batch.images],
        probs=all_probs,
        labels=labels,
        mask_fraction=batch.mask_fraction.astype(np.float32),
    )


class _Producer(threading.Thread):
    """Reads files in order, skips those already committed, prepares batches into a bounded queue."""

    def __init__(
        self, files: list[DiscoveredFile], committed: dict[str, Any], preparer: Preparer, batch_size: int, timer: StageTimer | None = None
    ) -> None:
        super().__init__(name="allbatch-producer", daemon=True)
        self.timer = timer
        self.files = files
        self.committed = committed
        self.preparer = preparer
        self.batch_size = batch_size
        self.out: queue.Queue[_Work | BaseException | None] = queue.Queue(maxsize=QUEUE_DEPTH)
        self.stop = threading.Event()
        self.skipped = 0
        self.skipped_ok = 0
        self.skipped_failed: list[tuple[str, str, str]] = []

    def _batches(self) -> Iterator[tuple[list[EncodedImage], list[int]]]:
        from allbatch.results.resume import plan

        pending: list[EncodedImage] = []
        superseded: list[int] = []
        for index, item in enumerate(self.files):
            if self.stop.is_set():
                return
            with timed(self.timer, "read", 1):
                image = read_encoded(index, item)
            action = plan(self.committed, image.relpath, image.sha256)
            if action == "skip":
                self.skipped += 1
                status = ImageStatus(int(self.committed[image.relpath].status))
                if status in FAILED_STATUSES:
                    self.skipped_failed.append((image.relpath, status.name.lower(), "committed by an earlier run"))
                else:
                    self.skipped_ok += 1
                continue
            if action == "redo":
                superseded.append(self.committed[image.relpath].row)
            pending.append(image)
            if len(pending) == self.batch_size:
                yield pending, superseded
                pending, superseded = [], []
        if pending:
            yield pending, superseded

    def _put(self, item: _Work | BaseException | None) -> bool:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def prepared(self) -> Iterator[_Work]:
        """Read and prepare batch after batch in the calling thread (the serial mode, or this thread's ``run``)."""
        for images, superseded in self._batches():
            with timed(self.timer, "prepare", len(images)):
                batch = self.preparer.prepare(images)
            yield _Work(batch, superseded)

    def run(self) -> None:
        try:
            for work in self.prepared():
                if not self._put(work):
                    return
            self._put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread, which re-raises it
            self._put(exc)

    def queued(self) -> Iterator[_Work]:
        """The batches this thread prepared, in order; re-raises its exception."""
        while True:
            work = self.out.get()
            if work is None:
                return
            if isinstance(work, BaseException):
                raise work
            yield work


class _SerialWriter:
    """``BackgroundWriter``'s interface, appending in the calling thread (the serial mode)."""

    def __init__(self, writer: Any) -> None:
        self.submit = writer.append

    def close(self) -> None:
        return


def run(config: RunConfig, progress: ProgressCallback | None = None, timer: StageTimer | None = None) -> RunSummary:
    """Run the whole job. Raises AllbatchError for user-facing problems before anything is written.

    ``timer`` (optional) accumulates each stage's time (see ``allbatch.stage_timer``); None costs nothing.
    """
    if config.batch_size < 1:
        raise UserInputError(f"--batch-size must be at least 1, got {config.batch_size}")
    files = discover(config.source, config.symlinks)
    artifact = load_model_artifact(config.model)

    from allbatch.backends.select import HOST_BACKENDS, create_backend, resolve_decoder
    from allbatch.results.writer import BackgroundWriter, ResultsWriter

    compat = compat_key(artifact)
    with create_backend(config.backend, artifact, max_batch=config.batch_size, precision=config.precision) as backend:
        decoder = resolve_decoder(config.decoder, for_backend=backend.name)
        if decoder == "dali" and backend.name in HOST_BACKENDS:
            raise UserInputError(
                f"--decoder dali leaves images on the GPU, but {backend.name} runs on the host: use --decoder cpu or dali-cpu"
            )
        started = time.perf_counter()  # after the model is loaded: img/s measures the images, not start-up
        provenance = _provenance(config, artifact, backend, decoder)
        log.info(
            "%d images found under %s; backend %s on %s, decoder %s",
            len(files),
            config.source,
            backend.name,
            backend.device,
            decoder,
        )
        with ResultsWriter.open(config.output, mode=config.mode, provenance=provenance, compat=compat, expected_rows=len(files)) as writer:
            committed = writer.committed()
            preparer = make_preparer(decoder, artifact, config)
            background = _SerialWriter(writer) if config.serial else BackgroundWriter(writer)
            producer = _Producer(files, committed, preparer, config.batch_size, timer)
            summary = RunSummary(str(config.output), len(files), 0, 0, 0, 0, 0.0, backend.name, decoder, backend.device)
            superseded: list[int] = []
            try:
                if not config.serial:
                    producer.start()
                work = producer.prepared() if config.serial else producer.queued()
                _consume(work, producer, backend, background, summary, superseded, progress, len(files), timer)
            finally:
                producer.stop.set()
                if producer.ident is not None:  # started (the threaded mode)
                    producer.join()
                preparer.close()
                with timed(timer, "write", 0):  # the writer's last flushes
                    background.close()
            if superseded:
                writer.supersede(superseded)
    summary.skipped = producer.skipped
    summary.ok += producer.skipped_ok
    summary.failed += len(producer.skipped_failed)
    summary.failed_examples.extend(producer.skipped_failed[: max(0, 20 - len(summary.failed_examples))])
    summary.seconds = time.perf_counter() - started
    return summary


def _consume(
    work_items: Iterator[_Work],
    producer: _Producer,
    backend: Backend,
    background: Any,
    summary: RunSummary,
    superseded: list[int],
    progress: ProgressCallback | None,
    total: int,
    timer: StageTimer | None,
) -> None:
    for work in work_items:
        batch = work.batch
        n_ok = len(batch.ok_positions)
        with timed(timer, "infer", n_ok):
            output = backend.infer(batch.inputs) if n_ok else InferenceOutput.empty(len(CLASS_NAMES), 0)
        rows = rows_for(batch, output)
        with timed(timer, "write", len(batch.images)):
            background.submit(rows)
        superseded.extend(work.superseded_rows)
        summary.processed += len(batch.images)
        summary.ok += n_ok
        for image in batch.images:
            if image.status in FAILED_STATUSES:
                summary.failed += 1
                if len(summary.failed_examples) < 20:
                    summary.failed_examples.append((image.relpath, ImageStatus(image.status).name.lower(), image.error))
        if progress is not None:
            progress(summary.processed + producer.skipped, total)


def _provenance(config: RunConfig, artifact: ModelArtifact, backend: Backend, decoder: str) -> dict[str, Any]:
    manifest = artifact.manifest
    return {
        "argv": config.argv,
        "input_root": str(Path(config.source).resolve()),
        "run_started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "backend": backend.name,
        "backend_details": backend.describe(),
        "device": backend.device,
        "decoder": decoder,
        "batch_size": config.batch_size,
        "symlinks": config.symlinks,
        "model_path": str(artifact.onnx_path),
        "model_sha256": artifact.sha256,
        "model_manifest": manifest.to_json(),
        "preprocessing": manifest.preprocessing,
        "segmentation": manifest.segmentation,
        "library_versions": library_versions(),
    }
