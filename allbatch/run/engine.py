"""The main job: discover -> read -> decode/segment/assemble -> infer -> write, streamed and overlapped.

Threads: a producer reads files and prepares batches (Pillow/NumPy on the CPU, DALI on the GPU) into a
bounded queue; the calling thread runs the backend; a background writer appends rows to results.h5.
Memory is bounded by the queue depths (a few batches), whatever the number of images.

``RunConfig.serial`` runs every stage in the calling thread, one after another (no overlap), and an optional
``StageTimer`` hook times each stage (off by default); ``allbatch bench`` measures the pipeline with both.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from allbatch import CLASS_NAMES
from allbatch.backends.base import Backend, InferenceOutput
from allbatch.backends.output_check import output_faults
from allbatch.core.errors import ModelError
from allbatch.core.records import UNKNOWN_STAT, EncodedImage, FileStat, PreparedBatch, Preparer
from allbatch.core.stage_timer import StageTimer, timed
from allbatch.core.status import ImageStatus
from allbatch.input.discover import DiscoveredFile
from allbatch.input.read import file_stat, read_encoded
from allbatch.qc.schema import empty_qc
from allbatch.qc.stage import QcStage
from allbatch.results.rows import ResultRows
from allbatch.results.writer import BackgroundWriter
from allbatch.run.config import ProgressCallback, RunConfig, RunProgress
from allbatch.run.plan import RunPlan, plan_run
from allbatch.run.tally import RunSummary, Tally

log = logging.getLogger("allbatch.run.engine")

QUEUE_DEPTH = 3
"""Prepared batches waiting for the backend: enough to hide decode jitter, small enough to bound memory."""
FIRST_CHUNK = 4
"""Images in the first inference call of a run, before any speed is measured."""
POLL_SECONDS = 0.2
"""How often the consumer, while waiting for a prepared batch, looks whether a stop was requested."""


@dataclass
class _Work:
    """One prepared batch plus the older rows that its files replace (changed since the last run):
    ``superseded_rows`` maps a position in the batch to the committed row that image replaces."""

    batch: PreparedBatch
    superseded_rows: dict[int, int]


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


def _stat_or_none(item: DiscoveredFile) -> FileStat | None:
    """The file's stat for the cheap resume check; None when it cannot be taken (the read stage reports why)."""
    if item.problem is not None:
        return None
    try:
        return file_stat(item.path)
    except OSError:
        return None


def rows_for(batch: PreparedBatch, output: InferenceOutput, qc: dict[str, Any] | None = None) -> ResultRows:
    """The results rows of one prepared batch: the backend's output for its n_ok decoded images spread over
    its n images (NaN probabilities and label -1 for failures), with the qc stage's columns (n rows); each
    row keyed by its image's index in the discovered order.

    Every executor makes its rows here, so every output is checked here (``backends.output_check``): an image
    whose output is not a result (NaN, inf, not probabilities: an fp16 overflow) gets status
    MODEL_OUTPUT_ERROR with the reason, failed-row values and qc fill values, never "ok"."""
    n = len(batch.images)
    all_probs = np.full((n, len(CLASS_NAMES)), np.nan, dtype=np.float32)
    labels = np.full(n, -1, dtype=np.int8)
    status = np.array([int(image.status) for image in batch.images], dtype=np.int8)
    errors = [image.error for image in batch.images]
    qc = dict(qc or {})
    ok = np.asarray(batch.ok_positions, dtype=np.intp)
    if len(ok):
        if output.probs.shape[1:] != (len(CLASS_NAMES),):
            shape = f"({len(ok)}, {len(CLASS_NAMES)})"
            raise ModelError(f"the model returned probabilities of shape {output.probs.shape}; allbatch reads {shape}")
        faults = output_faults(output)
        good = np.array([not fault for fault in faults], dtype=np.bool_)
        all_probs[ok[good]] = output.probs[good]
        labels[ok[good]] = output.probs[good].argmax(axis=1).astype(np.int8)
        invalid = ok[~good].tolist()
        if invalid:
            status[invalid] = ImageStatus.MODEL_OUTPUT_ERROR
            for position, fault in zip(ok.tolist(), faults, strict=True):
                errors[position] = fault or errors[position]
            fill = empty_qc(n)
            qc = {key: _with_rows(column, invalid, fill[key]) for key, column in qc.items()}
    return ResultRows(
        paths=[image.relpath for image in batch.images],
        sha256=[image.sha256 for image in batch.images],
        status=status,
        errors=errors,
        probs=all_probs,
        labels=labels,
        mask_fraction=batch.mask_fraction.astype(np.float32),
        file_stat=np.array(
            [image.stat.recorded() if image.stat else UNKNOWN_STAT for image in batch.images],
            dtype=np.int64,
        ).reshape(n, 3),
        index=np.array([image.index for image in batch.images], dtype=np.int64),
        qc=qc,
    )


def _with_rows(column: Any, rows: list[int], fill: np.ndarray) -> np.ndarray:
    """A copy of the (n, ...) host ``column`` with ``rows`` taken from ``fill`` (the failed-row values)."""
    out = np.array(column, copy=True)
    out[rows] = fill[rows]
    return out


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
        tally: Tally,
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
        self.tally = tally
        """Counts the skipped files (committed by an earlier run); the consumer counts the rest in the same tally."""

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
        row = self.committed[relpath]
        self.tally.add_skipped(relpath, int(row.status), row.row)

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
    """Run the whole job in this process. Raises AllbatchError for user-facing problems before anything is written.

    Order: the run plan (options, SRC and its files, the output path and its lock, the model artifact and
    whether it fits allbatch), then the inference runtime and device, then the results file, then the
    folder table, all under the plan's lock. ``stop``: when set (the CLI sets it on SIGINT/SIGTERM) the run
    stops after the chunk in flight: its rows and every queued row are committed, the file is left in its
    working layout for ``--resume``, and the summary says ``interrupted``. ``timer`` (optional) accumulates
    each stage's time (see ``allbatch.core.stage_timer``); None costs nothing.
    """
    with plan_run(config) as plan:
        return execute(plan, progress, stop, timer)


def execute(
    plan: RunPlan, progress: ProgressCallback | None = None, stop: threading.Event | None = None, timer: StageTimer | None = None
) -> RunSummary:
    """Run a planned job in this process (``run`` without the planning): backend, preparer, producer and
    consumer threads, writer, folder table. The plan's lock stays with the caller."""
    stop = stop or threading.Event()
    config, files, record = plan.config, plan.files, plan.record
    tally = Tally(len(files))
    with plan.open_backend() as backend:
        decoder = plan.decoder_for(backend.name)
        if stop.is_set():  # stopped while the model loaded: nothing is written
            summary = tally.summary(config.output, backend.name, decoder, backend.device)
            summary.interrupted = True
            return summary
        preparer = plan.make_preparer(decoder)
        started = time.perf_counter()  # after the model and the decoder are ready: img/s measures the images, not start-up
        startup_seconds = started - plan.started
        log.info(
            "%d images found under %s%s; backend %s on %s, decoder %s",
            len(files),
            config.source,
            "" if record.shard is None else f" (shard {record.shard}: rows {record.start}..{record.stop - 1} of {record.total})",
            backend.name,
            backend.device,
            decoder,
        )
        try:
            with plan.open_writer(plan.provenance(backend, decoder)) as writer:
                committed = writer.committed()
                background = _SerialWriter(writer) if config.serial else BackgroundWriter(writer)
                qc_stage = QcStage(plan.artifact.manifest)
                producer = _Producer(
                    files,
                    committed,
                    preparer,
                    config.batch_size,
                    first_index=record.start,
                    tally=tally,
                    timer=timer,
                    measure_inputs=qc_stage.measure_inputs,
                )
                consumer = _Consumer(producer, backend, background, tally, progress, stop, config, started, qc_stage, timer)
                try:
                    if not config.serial:
                        producer.start()
                    consumer.run()
                finally:
                    producer.stop.set()
                    if producer.ident is not None:  # started (the threaded mode)
                        producer.join()
                    with timed(timer, "write", 0):  # the writer's last flushes
                        background.close()
                if consumer.superseded:
                    writer.supersede(consumer.superseded)
                # An interrupted run keeps the working layout: closing is instant, and eval/export see it is incomplete.
                writer.close(compact=not consumer.interrupted)
        finally:
            preparer.close()
    tally.finish(config.output)
    summary = tally.summary(config.output, backend.name, decoder, backend.device, time.perf_counter() - started)
    summary.interrupted = consumer.interrupted
    summary.startup_seconds = startup_seconds
    if not summary.interrupted:  # an interrupted run is not finished: its folder table waits for the resume
        summary.groups = plan.write_groups()
    return summary


class _Consumer:
    """The calling thread's loop: takes prepared batches, infers them in chunks, submits the rows."""

    def __init__(
        self,
        producer: _Producer,
        backend: Backend,
        background: Any,
        tally: Tally,
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
        self.tally = tally
        self.interrupted = False
        self.progress = progress
        self.stop = stop
        self.config = config
        self.started = started
        self.superseded: list[int] = []
        self.seconds_per_image: float | None = None

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
        self.interrupted = self.stop.is_set()
        if self.interrupted:
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
        self.tally.add_rows(rows)
        if self.progress is not None:
            seconds = time.perf_counter() - self.started
            tally = self.tally
            self.progress(RunProgress(tally.processed, tally.skipped, tally.discovered, seconds))
