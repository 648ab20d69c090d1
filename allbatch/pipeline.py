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
from typing import Any, Literal, Protocol

import numpy as np

from allbatch import CLASS_NAMES, __version__
from allbatch.backends.base import Backend, InferenceOutput
from allbatch.discover import IMAGE_EXTENSIONS, DiscoveredFile, SymlinkPolicy, discover
from allbatch.errors import UserInputError
from allbatch.executors.shard import DiscoveryRecord, Shard, select
from allbatch.manifest import ModelArtifact, load_model_artifact
from allbatch.model_fit import check_model_fits
from allbatch.pathtext import fs_to_text
from allbatch.qc.stage import QcStage
from allbatch.qc.stats import manifest_json_for_provenance
from allbatch.read import file_stat, read_encoded
from allbatch.records import UNKNOWN_STAT, EncodedImage, FileStat, PreparedBatch, Preparer
from allbatch.results.preflight import check_output
from allbatch.results.rows import ResultRows
from allbatch.stage_timer import StageTimer, timed
from allbatch.status import FAILED_STATUSES, ImageStatus

log = logging.getLogger("allbatch.pipeline")

WriteMode = Literal["new", "resume", "overwrite"]
QUEUE_DEPTH = 3
"""Prepared batches waiting for the backend: enough to hide decode jitter, small enough to bound memory."""
INFER_CHUNK_SECONDS = 2.0
"""Longest an inference call should take where the device allows. A batch is inferred in chunks sized
from the measured speed; each chunk's rows are committed and reported before the next, so on a slow
device (a 2-core CPU runs the shipped model at ~8 img/s) progress, commits and a stop request come
every ~2 s instead of once per 64-image batch (8 s). Fast devices get whole batches."""
FIRST_CHUNK = 4
"""Images in the first inference call of a run, before any speed is measured."""
POLL_SECONDS = 0.2
"""How often the consumer, while waiting for a prepared batch, looks whether a stop was requested."""


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
    decode_threads: int | None = None
    """Decode threads (Pillow pool or DALI's CPU threads); None: ``auto_decode_threads()``."""
    argv: list[str] = field(default_factory=list)
    infer_chunk_seconds: float | None = INFER_CHUNK_SECONDS
    """See INFER_CHUNK_SECONDS; None infers whole batches (the benchmark's batch-size sweep)."""
    shard: Shard | None = None
    """Process only this contiguous range of the discovered order (``allbatch merge`` joins the parts)."""
    serial: bool = False
    """Read, prepare, infer and write one after another in the calling thread (no producer or writer thread):
    the benchmark's stage breakdown, whose stage times add up to the run's wall time."""


@dataclass
class RunSummary:
    """What a run did. ``ok``/``failed`` count every discovered file, including those skipped because an
    earlier run committed them (so a resumed run still reports failures); ``processed`` (and the rate)
    counts only the images run through the model now, ``skipped`` the committed ones not redone.
    ``failed_examples`` lists at most 20 (path, status, error). ``interrupted``: a stop was requested and
    honoured (committed rows kept, the file left in its working layout for ``--resume``).
    ``class_counts``: images of this run's files (processed or skipped) per predicted class."""

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
    interrupted: bool = False
    class_counts: dict[str, int] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "images_per_second": round(self.images_per_second, 2)}


@dataclass
class _Work:
    """One prepared batch plus the older rows that its files replace (changed since the last run):
    ``superseded_rows`` maps a position in the batch to the committed row that image replaces."""

    batch: PreparedBatch
    superseded_rows: dict[int, int]


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands, reported after each committed chunk.

    ``processed``: images run through the model by this run; ``skipped``: files an earlier run
    committed (not redone); ``total``: discovered files; ``seconds``: since the model was ready.
    The rate and the ETA use ``processed`` only, so a resumed run's skipped files do not inflate them.
    """

    processed: int
    skipped: int
    total: int
    seconds: float

    @property
    def handled(self) -> int:
        return self.processed + self.skipped

    @property
    def images_per_second(self) -> float | None:
        return self.processed / self.seconds if self.processed and self.seconds > 0 else None

    @property
    def eta_seconds(self) -> float | None:
        rate = self.images_per_second
        return (self.total - self.handled) / rate if rate else None


ProgressCallback = Callable[[RunProgress], None]
"""Called after each committed chunk of images."""


def next_chunk_size(seconds_per_image: float | None, batch_size: int, target_seconds: float | None) -> int:
    """Images in the next inference call: what ``target_seconds`` allows at the last measured speed,
    rounded down to a power of two (few distinct shapes for TensorRT profiles and CUDA graphs), within
    1..``batch_size``; ``FIRST_CHUNK`` before any measurement; ``batch_size`` when ``target_seconds`` is None."""
    if target_seconds is None:
        return batch_size
    if seconds_per_image is None:
        return min(batch_size, FIRST_CHUNK)
    fits = int(target_seconds / seconds_per_image) if seconds_per_image > 0 else batch_size
    if fits >= batch_size:
        return batch_size
    return max(1, 1 << (max(fits, 1).bit_length() - 1))


def slice_batch(batch: PreparedBatch, start: int, stop: int) -> PreparedBatch:
    """Images [start, stop) of ``batch`` as a batch of their own; ``inputs`` is sliced (a view, host or
    device) to the OK images among them, which are contiguous rows of the batch's inputs."""
    ok = batch.ok_positions
    first = sum(1 for i in ok if i < start)
    last = sum(1 for i in ok if i < stop)
    measures = batch.input_measures
    return PreparedBatch(
        images=batch.images[start:stop],
        inputs=batch.inputs[first:last],
        mask_fraction=batch.mask_fraction[start:stop],
        sizes=None if batch.sizes is None else batch.sizes[start:stop],
        input_measures=None if measures is None else {key: value[first:last] for key, value in measures.items()},
    )


class BackendInfo(Protocol):
    """What the provenance needs from a backend: a ``Backend``, or a description of one running elsewhere (Ray)."""

    name: str
    device: str

    def describe(self) -> dict[str, Any]: ...


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "allbatch": __version__}
    for dist in ("numpy", "h5py", "pillow", "onnx", "onnxruntime", "openvino", "torch", "cupy-cuda13x", "nvidia-dali-cuda130", "tensorrt"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


MAX_AUTO_DECODE_THREADS = 16
"""More decode threads than this bring nothing for one GPU's (or one process's) batches."""


def auto_decode_threads() -> int:
    """One decode thread per usable core, at most ``MAX_AUTO_DECODE_THREADS`` (2 on the 2-core development
    machine, 16 on a 16-core GPU machine: DALI's CPU stage and the mixed decoder's host part use them)."""
    from allbatch.cpu_features import cpu_features

    return min(cpu_features().usable_cores, MAX_AUTO_DECODE_THREADS)


def make_preparer(decoder: str, artifact: ModelArtifact, config: RunConfig) -> Preparer:
    """The decode/segment/assemble stage for a resolved decoder name ("cpu", "dali", "dali-cpu")."""
    manifest = artifact.manifest
    threads = config.decode_threads if config.decode_threads is not None else auto_decode_threads()
    if decoder == "cpu":
        from allbatch.cpu_prepare import PillowPreparer

        return PillowPreparer(manifest.prep, manifest.seg, threads=threads)
    from allbatch.gpu.dali_preparer import DaliPreparer

    return DaliPreparer(
        manifest.prep,
        manifest.seg,
        device="gpu" if decoder == "dali" else "cpu",
        max_batch=config.batch_size,
        num_threads=threads,
    )


def compat_key(artifact: ModelArtifact) -> dict[str, str]:
    """What must match for a resume to append to an existing results file."""
    manifest = artifact.manifest
    return {
        "model_sha256": artifact.sha256,
        "preprocessing": json.dumps(manifest.preprocessing, sort_keys=True),
        "segmentation": json.dumps(manifest.segmentation, sort_keys=True),
    }


def _stat_or_none(item: DiscoveredFile) -> FileStat | None:
    """The file's stat for the cheap resume check; None when it cannot be taken (the read stage reports why)."""
    if item.problem is not None:
        return None
    try:
        return file_stat(item.path)
    except OSError:
        return None


def shard_compat(record: DiscoveryRecord) -> dict[str, str]:
    """What a part file adds to ``compat_key``: its shard of one discovered list (empty for a whole run),
    so that a part resumes only as the same shard of the same list."""
    if record.shard is None:
        return {}
    return {"shard": json.dumps({"shard": record.shard, "total": record.total, "sha256": record.sha256}, sort_keys=True)}


def rows_for(batch: PreparedBatch, output: InferenceOutput, qc: dict[str, Any] | None = None) -> ResultRows:
    """The results rows of one prepared batch: the backend's output for its n_ok decoded images spread over
    its n images (NaN probabilities and label -1 for failures), with the qc stage's columns (n rows); each
    row keyed by its image's index in the discovered order."""
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
        file_stat=np.array(
            [image.stat.recorded() if image.stat else UNKNOWN_STAT for image in batch.images],
            dtype=np.int64,
        ).reshape(n, 3),
        index=np.array([image.index for image in batch.images], dtype=np.int64),
        qc=qc or {},
    )


class _Producer(threading.Thread):
    """Reads files in order, skips those already committed, prepares batches into a bounded queue.
    ``first_index`` is the discovered-order index of ``files[0]`` (a shard's start). ``measure_inputs``
    (optional) takes the quality-control input measures of each prepared batch here, off the backend's thread."""

    def __init__(
        self,
        files: list[DiscoveredFile],
        committed: dict[str, Any],
        preparer: Preparer,
        batch_size: int,
        first_index: int = 0,
        timer: StageTimer | None = None,
        measure_inputs: Callable[[Any], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(name="allbatch-producer", daemon=True)
        self.timer = timer
        self.measure_inputs = measure_inputs
        self.files = files
        self.first_index = first_index
        self.committed = committed
        self.preparer = preparer
        self.batch_size = batch_size
        self.out: queue.Queue[_Work | BaseException | None] = queue.Queue(maxsize=QUEUE_DEPTH)
        self.stop = threading.Event()
        self.skipped = 0
        self.skipped_ok = 0
        self.skipped_failed: list[tuple[str, str, str]] = []
        self.skipped_rows: list[int] = []
        """Committed rows of the skipped files (their predicted classes go into the summary)."""

    def _batches(self) -> Iterator[tuple[list[EncodedImage], dict[int, int]]]:
        from allbatch.results.resume import plan, unchanged_by_stat

        pending: list[EncodedImage] = []
        superseded: dict[int, int] = {}
        for index, item in enumerate(self.files, start=self.first_index):
            if self.stop.is_set():
                return
            stat = _stat_or_none(item) if self.committed else None
            if unchanged_by_stat(self.committed, item.relpath, stat):
                self._skip(item.relpath)  # same size, mtime and ctime as when committed: not even read
                continue
            with timed(self.timer, "read", 1):
                image = read_encoded(index, item, stat=stat)
            action = plan(self.committed, image.relpath, image.sha256)
            if action == "skip":
                self._skip(image.relpath)
                continue
            if action == "redo":
                superseded[len(pending)] = self.committed[image.relpath].row
            pending.append(image)
            if len(pending) == self.batch_size:
                yield pending, superseded
                pending, superseded = [], {}
        if pending:
            yield pending, superseded

    def _skip(self, relpath: str) -> None:
        self.skipped += 1
        self.skipped_rows.append(self.committed[relpath].row)
        status = ImageStatus(int(self.committed[relpath].status))
        if status in FAILED_STATUSES:
            self.skipped_failed.append((relpath, status.name.lower(), "committed by an earlier run"))
        else:
            self.skipped_ok += 1

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
            n_ok = len(batch.ok_positions)
            if self.measure_inputs is not None and n_ok:
                with timed(self.timer, "qc", 0):  # its images are counted once, after inference
                    batch.input_measures = self.measure_inputs(batch.inputs)
            yield _Work(batch, superseded)

    def run(self) -> None:
        try:
            for work in self.prepared():
                if not self._put(work):
                    return
            self._put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread, which re-raises it
            self._put(exc)


class _SerialWriter:
    """``BackgroundWriter``'s interface, appending in the calling thread (the serial mode)."""

    def __init__(self, writer: Any) -> None:
        self.submit = writer.append

    def close(self) -> None:
        return


def run(
    config: RunConfig, progress: ProgressCallback | None = None, stop: threading.Event | None = None, timer: StageTimer | None = None
) -> RunSummary:
    """Run the whole job. Raises AllbatchError for user-facing problems before anything is written.

    Order: the cheap checks first (options, SRC and its files, the output path and its lock, the model
    artifact and whether it fits allbatch), then the inference runtime and device, then the results file.
    ``stop``: when set (the CLI sets it on SIGINT/SIGTERM) the run stops after the chunk in flight: its
    rows and every queued row are committed, the file is left in its working layout for ``--resume``,
    and the summary says ``interrupted``. ``timer`` (optional) accumulates each stage's time (see
    ``allbatch.stage_timer``); None costs nothing.
    """
    stop = stop or threading.Event()
    if config.batch_size < 1:
        raise UserInputError(f"--batch-size must be at least 1, got {config.batch_size}")
    files, record = select(discover(config.source, config.symlinks), config.shard)
    if not record.total:
        raise UserInputError(
            f"no images found under {config.source} (looked for {' '.join(sorted(IMAGE_EXTENSIONS))} in every subfolder); nothing written"
        )
    check_output(config.output, config.mode)
    artifact = load_model_artifact(config.model)
    check_model_fits(artifact)

    from allbatch.backends.select import HOST_BACKENDS, create_backend, resolve_decoder
    from allbatch.results.writer import BackgroundWriter, ResultsWriter

    compat = compat_key(artifact) | shard_compat(record)
    with create_backend(config.backend, artifact, max_batch=config.batch_size, precision=config.precision) as backend:
        decoder = resolve_decoder(config.decoder, for_backend=backend.name)
        if decoder == "dali" and backend.name in HOST_BACKENDS:
            raise UserInputError(
                f"--decoder dali leaves images on the GPU, but {backend.name} runs on the host: use --decoder cpu or dali-cpu"
            )
        summary = RunSummary(str(config.output), len(files), 0, 0, 0, 0, 0.0, backend.name, decoder, backend.device)
        if stop.is_set():  # stopped while the model loaded: nothing is written
            summary.interrupted = True
            return summary
        started = time.perf_counter()  # after the model is loaded: img/s measures the images, not start-up
        provenance = _provenance(config, artifact, backend, decoder) | {"discovery": record.to_dict()}
        log.info(
            "%d images found under %s%s; backend %s on %s, decoder %s",
            len(files),
            config.source,
            "" if record.shard is None else f" (shard {record.shard}: rows {record.start}..{record.stop - 1} of {record.total})",
            backend.name,
            backend.device,
            decoder,
        )
        with ResultsWriter.open(config.output, mode=config.mode, provenance=provenance, compat=compat, expected_rows=len(files)) as writer:
            committed = writer.committed()
            preparer = make_preparer(decoder, artifact, config)
            background = _SerialWriter(writer) if config.serial else BackgroundWriter(writer)
            qc_stage = QcStage(artifact.manifest)
            producer = _Producer(
                files, committed, preparer, config.batch_size, first_index=record.start, timer=timer, measure_inputs=qc_stage.measure_inputs
            )
            consumer = _Consumer(producer, backend, background, summary, progress, stop, config, started, qc_stage, timer)
            try:
                if not config.serial:
                    producer.start()
                consumer.run()
            finally:
                producer.stop.set()
                if producer.ident is not None:  # started (the threaded mode)
                    producer.join()
                preparer.close()
                with timed(timer, "write", 0):  # the writer's last flushes
                    background.close()
            if consumer.superseded:
                writer.supersede(consumer.superseded)
            # An interrupted run keeps the working layout: closing is instant, and eval/export see it is incomplete.
            writer.close(compact=not summary.interrupted)
    summary.skipped = producer.skipped
    summary.ok += producer.skipped_ok
    summary.failed += len(producer.skipped_failed)
    summary.failed_examples.extend(producer.skipped_failed[: max(0, 20 - len(summary.failed_examples))])
    for index in _committed_labels(config.output, producer.skipped_rows):
        consumer.count_label(int(index))
    summary.class_counts = {name: consumer.labels[i] for i, name in enumerate(CLASS_NAMES)}
    summary.seconds = time.perf_counter() - started
    return summary


def _committed_labels(output: Path, rows: list[int]) -> list[int]:
    """Predicted class indices (-1 for failed) of committed ``rows`` of ``output``."""
    if not rows:
        return []
    from allbatch.results.reader import read_labels

    return read_labels(output, rows).tolist()


class _Consumer:
    """The calling thread's loop: takes prepared batches, infers them in chunks, submits the rows."""

    def __init__(
        self,
        producer: _Producer,
        backend: Backend,
        background: Any,
        summary: RunSummary,
        progress: ProgressCallback | None,
        stop: threading.Event,
        config: RunConfig,
        started: float,
        qc_stage: QcStage | None = None,
        timer: StageTimer | None = None,
    ) -> None:
        self.producer = producer
        self.qc_stage = qc_stage
        self.timer = timer
        self.backend = backend
        self.background = background
        self.summary = summary
        self.progress = progress
        self.stop = stop
        self.config = config
        self.started = started
        self.superseded: list[int] = []
        self.labels = [0] * len(CLASS_NAMES)
        self.seconds_per_image: float | None = None

    def count_label(self, label: int) -> None:
        if 0 <= label < len(self.labels):
            self.labels[label] += 1

    def _works(self) -> Iterator[_Work]:
        """Prepared batches until the end of the input or a stop: made in this thread in the serial mode,
        else taken from the producer thread's queue."""
        if self.config.serial:
            for prepared in self.producer.prepared():
                yield prepared
                if self.stop.is_set():
                    return
            return
        while (queued := self._next_work()) is not None:
            yield queued

    def _next_work(self) -> _Work | None:
        """The next batch from the producer thread; None at the end of the input or when a stop was requested."""
        while not self.stop.is_set():
            try:
                work = self.producer.out.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if isinstance(work, BaseException):
                raise work
            return work
        return None

    def run(self) -> None:
        for work in self._works():
            batch = work.batch
            start = 0
            while start < len(batch.images):
                if self.stop.is_set():
                    break
                size = next_chunk_size(self.seconds_per_image, self.config.batch_size, self.config.infer_chunk_seconds)
                stop_at = min(len(batch.images), start + size)
                self._infer_and_submit(slice_batch(batch, start, stop_at))
                self.superseded.extend(row for position, row in work.superseded_rows.items() if start <= position < stop_at)
                start = stop_at
        self.summary.interrupted = self.stop.is_set()
        if self.summary.interrupted:
            log.warning("stop requested: the rows in flight are committed, then the run stops")

    def _infer_and_submit(self, chunk: PreparedBatch) -> None:
        n_ok = len(chunk.ok_positions)
        if n_ok:
            began = time.perf_counter()
            with timed(self.timer, "infer", n_ok):
                output = self.backend.infer(chunk.inputs)
            self.seconds_per_image = (time.perf_counter() - began) / n_ok
        else:
            output = InferenceOutput.empty(len(CLASS_NAMES), 0)
        qc = None
        if self.qc_stage is not None:
            with timed(self.timer, "qc", n_ok):
                qc = self.qc_stage(chunk, output)  # measures and flags; never changes output
        rows = rows_for(chunk, output, qc)
        with timed(self.timer, "write", len(chunk.images)):
            self.background.submit(rows)
        summary = self.summary
        summary.processed += len(chunk.images)
        summary.ok += n_ok
        for label in rows.labels.tolist():
            self.count_label(label)
        for image in chunk.images:
            if image.status in FAILED_STATUSES:
                summary.failed += 1
                if len(summary.failed_examples) < 20:
                    summary.failed_examples.append((image.relpath, ImageStatus(image.status).name.lower(), image.error))
        if self.progress is not None:
            seconds = time.perf_counter() - self.started
            self.progress(RunProgress(summary.processed, self.producer.skipped, summary.discovered, seconds))


def _provenance(config: RunConfig, artifact: ModelArtifact, backend: BackendInfo, decoder: str) -> dict[str, Any]:
    manifest = artifact.manifest
    return {
        "argv": config.argv,
        "input_root": fs_to_text(str(Path(config.source).resolve())),
        "run_started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "backend": backend.name,
        "backend_details": backend.describe(),
        "device": backend.device,
        "decoder": decoder,
        "batch_size": config.batch_size,
        "symlinks": config.symlinks,
        "model_path": fs_to_text(str(artifact.onnx_path)),
        "model_sha256": artifact.sha256,
        "model_manifest": manifest_json_for_provenance(manifest),
        "preprocessing": manifest.preprocessing,
        "segmentation": manifest.segmentation,
        "library_versions": library_versions(),
    }
