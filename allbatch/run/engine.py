"""The main job: discover -> read -> decode/segment/assemble -> infer -> write, streamed and overlapped.

Threads: a producer reads files and prepares batches (Pillow/NumPy on the CPU, DALI on the GPU) into a
bounded queue; the calling thread runs the backend; a background writer appends rows to results.h5.
Memory is bounded by the queue depths (a few batches), whatever the number of images.

Running ahead on the GPU (issue 22), both ends pipelined:
- producer: with a ``RunAheadPreparer`` (DALI), batch k+1 is started (checked, fed to the decoder) before
  batch k is finished (``_Producer._prepared_batches``), so the decoder never waits for this thread;
- consumer: with a backend whose ``submit`` is asynchronous (torch on CUDA), chunk k+1 is queued on the
  device before the rows of chunk k are gathered, measured and written (``_Consumer.run``).
Rows, their order and their values are the same as one batch at a time; the serial mode does neither.

``RunConfig.serial`` runs every stage in the calling thread, one after another (no overlap), and an optional
``StageTimer`` hook times each stage (off by default); ``allbatch bench`` measures the pipeline with both.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from allbatch import CLASS_NAMES
from allbatch.backends.base import Backend, InferenceOutput, PendingInference
from allbatch.backends.output_check import output_faults
from allbatch.core.errors import ModelError
from allbatch.core.records import UNKNOWN_STAT, EncodedImage, FileStat, PreparedBatch, Preparer, RunAheadPreparer
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


@dataclass
class _InFlight:
    """A chunk whose inference was launched (``pending`` None: no decoded image in it), when, and the older
    rows its files replace (committed with its rows)."""

    chunk: PreparedBatch
    pending: PendingInference | None
    began: float
    superseded: list[int] = field(default_factory=list)


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
        run_ahead: bool = False,
    ) -> None:
        super().__init__(name="allbatch-producer", daemon=True)
        self.timer = timer
        self.run_ahead = run_ahead
        """Start batch k+1 before finishing batch k where the preparer can (off in the serial mode)."""
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

    def _prepared_batches(self) -> Iterator[tuple[PreparedBatch, dict[int, int]]]:
        """Prepared batches in input order, each with its superseded rows.

        Running ahead (issue 22): a ``RunAheadPreparer`` has up to ``prefetch_depth`` batches under way:
        batch k+1 is started (its files checked and fed to DALI, which decodes on its own threads) before
        batch k is finished, so reading, hashing and checking the next batch overlap the decoding of this
        one. Any other preparer, the serial mode and ``prefetch_depth`` 1 prepare one batch at a time.
        """
        preparer = self.preparer
        depth = preparer.prefetch_depth if self.run_ahead and isinstance(preparer, RunAheadPreparer) else 1
        if depth <= 1:
            for images, superseded in self._batches():
                with timed(self.timer, "prepare", len(images)):
                    batch = preparer.prepare(images)
                yield batch, superseded
            return
        assert isinstance(preparer, RunAheadPreparer)  # depth > 1 only for one
        under_way: deque[tuple[Any, dict[int, int], int]] = deque()
        for images, superseded in self._batches():
            with timed(self.timer, "prepare", 0):
                under_way.append((preparer.start(images), superseded, len(images)))
            if len(under_way) >= depth:
                yield self._finish(preparer, *under_way.popleft())
        while under_way and not self.stop.is_set():
            yield self._finish(preparer, *under_way.popleft())

    def _finish(self, preparer: RunAheadPreparer, pending: Any, superseded: dict[int, int], n: int) -> tuple[PreparedBatch, dict[int, int]]:
        with timed(self.timer, "prepare", n):
            return preparer.finish(pending), superseded

    def prepared(self) -> Iterator[_Work]:
        """Read and prepare batch after batch in the calling thread (the serial mode, or this thread's ``run``)."""
        for batch, superseded in self._prepared_batches():
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
    config: RunConfig,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    timer: StageTimer | None = None,
    backend: Backend | None = None,
) -> RunSummary:
    """Run the whole job in this process. Raises AllbatchError for user-facing problems before anything is written.

    Order: the run plan (options, SRC and its files, the output path and its lock, the model artifact and
    whether it fits allbatch), then the inference runtime and device, then the results file, then the
    folder table, all under the plan's lock. ``stop``: when set (the CLI sets it on SIGINT/SIGTERM) the run
    stops after the chunk in flight: its rows and every queued row are committed, the file is left in its
    working layout for ``--resume``, and the summary says ``interrupted``. ``timer`` (optional) accumulates
    each stage's time (see ``allbatch.core.stage_timer``); None costs nothing. ``backend``: an entered backend
    built for this config (``run.plan.open_backend``) to use instead of opening one; the caller keeps it open
    across runs (the benchmark's rounds: the model's start-up is paid once, as the DALI pipeline's is).
    """
    with plan_run(config) as plan:
        return execute(plan, progress, stop, timer, backend)


def execute(
    plan: RunPlan,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    timer: StageTimer | None = None,
    backend: Backend | None = None,
) -> RunSummary:
    """Run a planned job in this process (``run`` without the planning): backend, preparer, producer and
    consumer threads, writer, folder table. The plan's lock stays with the caller."""
    stop = stop or threading.Event()
    config, files, record = plan.config, plan.files, plan.record
    tally = Tally(len(files))
    # An open backend handed in by the caller stays open (nullcontext); else this run opens and closes its own.
    with plan.open_backend() if backend is None else contextlib.nullcontext(backend) as backend:
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
                    run_ahead=not config.serial,
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
    # Issue 22: start-up (model, backend, decoder pipeline) and the steady rate are reported apart.
    log.info(
        "start-up %.2f s; %d images in %.2f s (%.1f images/s)",
        startup_seconds,
        summary.processed,
        summary.seconds,
        summary.images_per_second,
    )
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
        # Pipelined (issue 22): each chunk is launched (``backend.submit``: queued on the device by an
        # asynchronous backend) before the previous chunk is completed (its outputs waited for, measured and
        # written), so the device computes chunk k+1 while this thread finishes chunk k. With a synchronous
        # backend, in the serial mode or with ``tuning.overlap_infer`` off, each chunk is completed at once.
        overlap = self.backend.submits_async and self.config.tuning.overlap_infer and not self.config.serial
        previous: _InFlight | None = None
        for work in self._works():
            batch = work.batch
            start = 0
            while start < len(batch.images):
                if self.stop.is_set():
                    break
                size = next_chunk_size(self.seconds_per_image, self.config.batch_size, self.config.infer_chunk_seconds)
                stop_at = min(len(batch.images), start + size)
                launched = self._launch(slice_batch(batch, start, stop_at))
                launched.superseded = [row for position, row in work.superseded_rows.items() if start <= position < stop_at]
                if previous is not None:
                    self._complete(previous)
                previous = launched
                if not overlap:
                    self._complete(previous)
                    previous = None
                start = stop_at
        if previous is not None:  # the last chunk (also after a stop: the rows in flight are committed)
            self._complete(previous)
        self.interrupted = self.stop.is_set()
        if self.interrupted:
            log.warning("stop requested: the rows in flight are committed, then the run stops")

    def _launch(self, chunk: PreparedBatch) -> _InFlight:
        """Start inference of ``chunk``'s decoded images (nothing to start when none decoded)."""
        n_ok = len(chunk.ok_positions)
        if not n_ok:
            return _InFlight(chunk, None, 0.0)
        began = time.perf_counter()
        with timed(self.timer, "infer", 0):  # its images are counted when its outputs arrive
            pending = self.backend.submit(chunk.inputs)
        return _InFlight(chunk, pending, began)

    def _complete(self, flight: _InFlight) -> None:
        """Wait for ``flight``'s outputs, then measure, write and count its rows."""
        chunk = flight.chunk
        n_ok = len(chunk.ok_positions)
        if flight.pending is not None:
            with timed(self.timer, "infer", n_ok):
                output = flight.pending.result()
            self.seconds_per_image = (time.perf_counter() - flight.began) / n_ok
        else:
            output = InferenceOutput.empty(len(CLASS_NAMES), 0)
        qc = None
        if self.qc_stage is not None:
            with timed(self.timer, "qc", n_ok):
                qc = self.qc_stage(chunk, output)  # measures and flags; never changes output
        rows = rows_for(chunk, output, qc)
        with timed(self.timer, "write", len(chunk.images)):
            self.background.submit(rows)
        self.superseded.extend(flight.superseded)
        self.tally.add_rows(rows)
        if self.progress is not None:
            seconds = time.perf_counter() - self.started
            tally = self.tally
            self.progress(RunProgress(tally.processed, tally.skipped, tally.discovered, seconds))
