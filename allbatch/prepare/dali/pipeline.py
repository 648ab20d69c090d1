"""The ``@pipeline_def`` wrapper around ``dali_graph`` and a runner that feeds batches of bytes, running ahead.

The graph is fed by ``fn.external_source`` (``batch=True``) with exactly the files of the batch: any
batch size from 1 to ``max_batch``, so output row i is input i, with no padding and no duplicates, and
the last partial batch is as exact as the others.

Running ahead (issue 22): the runner feeds each batch with ``Pipeline.feed_input`` and starts it with
``schedule_run``, and takes its outputs later with ``outputs`` (first in, first out), so DALI decodes batch
k+1 while the caller assembles batch k. Checked against DALI 2.4.0's ``pipeline.py`` and with its CPU
operators: with the default (dynamic) executor, iterations scheduled before their outputs are taken run
ahead of the caller, variable batch sizes are accepted, and outputs come back in feeding order. DALI
refuses named inputs to ``run`` above ``prefetch_queue_depth=1``; ``feed_input`` has no such limit. The
first ``schedule_run`` of a pipeline runs ``prefetch_queue_depth`` iterations at once (its prefetch),
so every pipeline is warmed with that many batches when built (``warm_up``); afterwards each
``schedule_run`` runs one. ``prefetch_depth`` is both that queue depth and the most batches the runner
lets run ahead; 1 is the old behaviour (each batch decoded while the caller waits).

A corrupt file fails its whole batch (DALI issue 3913), with "Failed to decode sample #i" naming it; with
DALI 2.4 the pipeline stays usable after such an error (checked with the CPU operators: the batches fed
behind it come out intact), so the caller can drop the file and run the batch again without a rebuild
(``isolation``). Any other error discards the pipeline; the batches in flight behind it are fed again to
a new one.

Pipelines are expensive to build (on a GPU: a CUDA context, nvJPEG handles and memory pools, and the
first iteration allocates every output), so they are kept for the life of the process
(``pipeline_cache``): a runner borrows one for the graph it needs and gives it back on ``close``.

Streams (``device="gpu"``): DALI runs its GPU operators on its own internal CUDA stream. The runner
passes its consumer stream (a CuPy stream) to ``Pipeline.outputs(cuda_stream=...)``, so DALI makes that
stream wait for the outputs; the outputs are then taken with ``cupy.from_dlpack`` inside
``with stream:``, and DALI's ``__dlpack__`` (called with that stream) inserts an event wait if one is
still needed. Anything enqueued on the consumer stream afterwards (the assembly kernel) is therefore
ordered after DALI's work with no host synchronisation. The pipeline uses DALI's default (dynamic)
execution model, in which outputs are not recycled while referenced: the CuPy views stay valid for as
long as the caller holds them. The small per-sample metadata (pixel count, native shape) is copied to
the host, which waits for that batch's DALI work (the batches behind it keep running).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from allbatch.prepare.dali import pipeline_cache
from allbatch.prepare.dali.graph import Device, blank_bottom, decode, hsv_threshold, mask_pixel_count, native_shape, resize_square
from allbatch.prepare.dali.isolation import is_decode_error
from allbatch.prepare.dali.pipeline_cache import PipelineKey
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.segment import SegmentationParams

log = logging.getLogger("allbatch.prepare.dali.pipeline")

ENCODED = "encoded"
BLANK_ANCHOR = "blank_anchor"
BLANK_ROWS = "blank_rows"


DEFAULT_PREFETCH_DEPTH = 2
"""Batches DALI may have in flight ahead of the caller (issue 22: at least two prepared ahead)."""


def build_pipeline(
    batch_size: int,
    device: Device,
    params: SegmentationParams,
    prep: Preprocessing,
    num_threads: int,
    device_id: int | None,
    prefetch_depth: int = 1,
    fancy_upsampling: bool = True,
) -> Any:
    """Build (not yet run) the preparation pipeline.

    Inputs (external sources, host): ``encoded`` 1-D uint8 per sample; when
    ``prep.blank_bottom_fraction > 0`` also ``blank_anchor`` and ``blank_rows`` (1-element float32).
    Outputs, in order: original (S, S, 3) uint8 HWC, segmented (S, S, 3) uint8 HWC (both on
    ``device``), kept-pixel count (uint64 scalar, on ``device``), native shape (3,) int64 (host).

    Args:
        batch_size: the largest batch ever fed.
        device: "gpu" (mixed decoder, GPU operators) or "cpu" (CPU operators only).
        device_id: CUDA device for "gpu"; must be None for "cpu" so DALI creates no CUDA context.
        prefetch_depth: DALI's ``prefetch_queue_depth``; the first ``schedule_run`` runs that many fed
            batches (see the module docstring: ``warm_up`` takes care of it).
        fancy_upsampling: the decoder's ``jpeg_fancy_upsampling`` (``graph.decode``).
    Returns:
        a built ``nvidia.dali.Pipeline``.
    """
    if device not in ("gpu", "cpu"):
        raise ValueError(f"device must be 'gpu' or 'cpu', got {device!r}")
    if device == "cpu" and device_id is not None:
        raise ValueError("a CPU pipeline takes device_id=None (DALI then runs without CUDA)")
    if device == "gpu" and device_id is None:
        raise ValueError("a GPU pipeline needs a device_id")
    if prefetch_depth < 1:
        raise ValueError(f"prefetch_depth must be at least 1, got {prefetch_depth}")
    from nvidia.dali import fn, pipeline_def
    from nvidia.dali.types import DALIDataType

    blanking = prep.blank_bottom_fraction > 0

    # Default (dynamic) executor: outputs stay valid while referenced. device_id=None is valid for DALI
    # (CPU-only) although its stub says int.
    @pipeline_def(
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=device_id,  # type: ignore[arg-type]
        prefetch_queue_depth=prefetch_depth,
        enable_conditionals=True,
    )
    def preparation_graph() -> tuple[Any, ...]:
        encoded = fn.external_source(name=ENCODED, batch=True, dtype=DALIDataType.UINT8, ndim=1, device="cpu")
        rgb = decode(encoded, device, fancy_upsampling)
        if blanking:
            anchor = fn.external_source(name=BLANK_ANCHOR, batch=True, dtype=DALIDataType.FLOAT, ndim=1, device="cpu")
            rows = fn.external_source(name=BLANK_ROWS, batch=True, dtype=DALIDataType.FLOAT, ndim=1, device="cpu")
            rgb = blank_bottom(rgb, anchor, rows)
        segmented, mask = hsv_threshold(rgb, params)
        return (
            resize_square(rgb, prep.size),
            resize_square(segmented, prep.size),
            mask_pixel_count(mask),
            native_shape(rgb),
        )

    pipe = preparation_graph()
    pipe.build()
    return pipe


def pipeline_inputs(prep: Preprocessing, encoded: Sequence[bytes], heights: Sequence[int] | None) -> dict[str, list[npt.NDArray[Any]]]:
    """The external sources' batches for ``encoded`` (see ``build_pipeline``); ``heights`` only when blanking."""
    inputs = {ENCODED: [np.frombuffer(data, dtype=np.uint8) for data in encoded]}
    if prep.blank_bottom_fraction > 0:
        if heights is None or len(heights) != len(encoded):
            raise ValueError("blanking the bottom band needs each image's height")
        rows = [prep.blank_rows(height) for height in heights]
        inputs[BLANK_ANCHOR] = [np.array([height - row], dtype=np.float32) for height, row in zip(heights, rows, strict=True)]
        inputs[BLANK_ROWS] = [np.array([row], dtype=np.float32) for row in rows]
    return inputs


def warm_up_image(size: int) -> bytes:
    """A size x size 4:2:0 JPEG (a colour gradient, foreground included): what ``warm_up`` decodes."""
    import io

    from PIL import Image

    ramp = np.linspace(0, 255, size, dtype=np.float32)
    rgb = np.stack([ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1), 255 - ramp[None, :].repeat(size, 0)], axis=2)
    buffer = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buffer, format="JPEG", quality=90, subsampling=2)
    return buffer.getvalue()


def warm_up(pipe: Any, key: PipelineKey) -> None:
    """Run ``key.prefetch_depth`` batches through a new pipeline and drop their outputs.

    This takes the first ``schedule_run`` (which runs that many fed batches at once, see the module
    docstring) out of the way, and lets DALI create its threads, nvJPEG state and every output buffer before
    the first real batch. On a GPU the batches are full (``max_batch`` images), so the buffers are
    allocated at the largest batch; on the CPU one image each is enough (and cheap).
    """
    count = key.max_batch if key.device == "gpu" else 1
    image = warm_up_image(key.prep.size)
    inputs = pipeline_inputs(key.prep, [image] * count, [key.prep.size] * count)
    for _ in range(key.prefetch_depth):
        for name, batch in inputs.items():
            pipe.feed_input(name, batch)
    pipe.schedule_run()
    for _ in range(key.prefetch_depth):
        pipe.outputs()


def _build_warm(key: PipelineKey) -> Any:
    pipe = build_pipeline(
        key.max_batch, key.device, key.seg, key.prep, key.num_threads, key.device_id, key.prefetch_depth, key.fancy_upsampling
    )
    warm_up(pipe, key)
    return pipe


@dataclass
class GraphBatch:
    """One batch out of the graph, row i from input i.

    original, segmented: (n, S, S, 3) uint8 HWC; NumPy on the host ("cpu") or CuPy on the GPU ("gpu"),
        the CuPy arrays ordered on the runner's stream.
    mask_pixels: (n,) int64 kept pixels at native resolution (host).
    shapes: (n, 3) int64 native (H, W, C) after decoding (host).
    """

    original: Any
    segmented: Any
    mask_pixels: npt.NDArray[np.int64]
    shapes: npt.NDArray[np.int64]
    keepalive: tuple[Any, ...] = field(default=(), repr=False)

    @property
    def mask_fraction(self) -> npt.NDArray[np.float64]:
        """(n,) float64 kept fraction, equal to ``mask.mean()`` at native resolution."""
        area = self.shapes[:, 0].astype(np.float64) * self.shapes[:, 1]
        return self.mask_pixels.astype(np.float64) / area


@dataclass
class _Ticket:
    """One batch fed to DALI and not yet collected: its inputs (kept to feed it again after a rebuild) and
    how many times it has been fed."""

    number: int
    inputs: dict[str, list[npt.NDArray[Any]]]
    attempts: int = 1


class DaliRunner:
    """Runs the preparation graph on lists of encoded files, up to ``prefetch_depth`` batches ahead.

    ``submit`` feeds a batch and starts it; ``result`` returns that batch's outputs (or raises its error),
    taking DALI's outputs in feeding order and keeping those of other batches until asked for; ``run`` is
    both at once. The pipeline is borrowed from ``pipeline_cache`` on first use and given back by ``close``.
    Not thread-safe: one runner serves one thread.

    Args:
        stream: for "gpu", the CuPy stream the outputs are ordered on (default: a new non-blocking one).
        prefetch_depth: batches in flight at most (1: every batch is decoded while the caller waits).
        fancy_upsampling: the decoder's ``jpeg_fancy_upsampling`` (``graph.decode``).
    """

    def __init__(
        self,
        prep: Preprocessing,
        seg: SegmentationParams,
        device: Device,
        max_batch: int,
        num_threads: int = 2,
        device_id: int = 0,
        stream: Any = None,
        prefetch_depth: int = DEFAULT_PREFETCH_DEPTH,
        fancy_upsampling: bool = True,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if device not in ("gpu", "cpu"):
            raise ValueError(f"device must be 'gpu' or 'cpu', got {device!r}")
        if prefetch_depth < 1:
            raise ValueError(f"prefetch_depth must be at least 1, got {prefetch_depth}")
        self.prep = prep
        self.seg = seg
        self.device: Device = device
        self.max_batch = max_batch
        self.num_threads = max(1, num_threads)
        self.device_id = device_id if device == "gpu" else None
        self.prefetch_depth = prefetch_depth
        self.key = PipelineKey(device, self.device_id, max_batch, self.num_threads, prefetch_depth, fancy_upsampling, prep, seg)
        self.stream = stream
        if device == "gpu" and stream is None:
            import cupy

            with cupy.cuda.Device(device_id):
                self.stream = cupy.cuda.Stream(non_blocking=True)
        self._pipe: Any = None
        self._flight: deque[_Ticket] = deque()  # fed and scheduled, in DALI's (first in, first out) order
        self._done: dict[int, GraphBatch | Exception] = {}  # collected, not yet asked for
        self._next = 0
        self._poisoned = False  # the last error from this pipeline was a decode error
        self.builds = 0
        """Pipelines this runner built (0 while it reuses one built earlier in the process)."""
        self.rebuilds = 0
        """Pipelines discarded after an error that was not a decode error."""

    # -- the pipeline ---------------------------------------------------------------------------

    def _pipeline(self) -> Any:
        if self._pipe is None:
            self._pipe, built = pipeline_cache.acquire(self.key, lambda: _build_warm(self.key))
            self.builds += int(built)
        return self._pipe

    def ready(self) -> None:
        """Borrow (or build and warm) the pipeline now, before the first batch: start-up, not run time."""
        self._pipeline()

    def _discard(self) -> None:
        """Drop a pipeline an error may have left unusable (it is not given back to the cache)."""
        self._pipe = None
        self._poisoned = False
        self.rebuilds += 1

    # -- feeding and collecting -----------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._flight)

    def submit(self, encoded: Sequence[bytes], heights: Sequence[int] | None = None) -> int:
        """Feed ``encoded`` (1..max_batch files) and start decoding it; returns the ticket for ``result``.

        Args:
            encoded: the files' bytes (must stay alive until ``result``).
            heights: each image's height after EXIF orientation (needed only to blank the bottom band).
        """
        if not 1 <= len(encoded) <= self.max_batch:
            raise ValueError(f"batch of {len(encoded)} files, expected 1..{self.max_batch}")
        ticket = _Ticket(self._next, pipeline_inputs(self.prep, encoded, heights))
        self._next += 1
        while len(self._flight) >= self.prefetch_depth:  # at most prefetch_depth batches ahead
            self._collect_oldest()
        self._feed(ticket)
        return ticket.number

    def _feed(self, ticket: _Ticket) -> None:
        pipe = self._pipeline()
        for name, batch in ticket.inputs.items():
            pipe.feed_input(name, batch)
        pipe.schedule_run()
        self._flight.append(ticket)

    def result(self, ticket: int) -> GraphBatch:
        """The outputs of batch ``ticket`` (row i from input i).

        Raises:
            RuntimeError: whatever DALI raised for that batch; a corrupt file fails the whole batch, naming
                it ("Failed to decode sample #i", see ``isolation``). The batches behind it are unaffected.
        """
        while ticket not in self._done:
            if not self._flight:
                raise KeyError(f"no batch {ticket} in flight")
            self._collect_oldest()
        outcome = self._done.pop(ticket)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def run(self, encoded: Sequence[bytes], heights: Sequence[int] | None = None) -> GraphBatch:
        """``submit`` then ``result``: decode, segment and resize ``encoded`` now."""
        return self.result(self.submit(encoded, heights))

    def _collect_oldest(self) -> None:
        """Take DALI's next outputs (those of the oldest ticket) into ``_done``, or its error.

        A decode error keeps the pipeline (DALI 2.4 stays usable after one). Any other error discards it;
        the tickets behind are fed again to a new pipeline, and so is this one once when the error may be
        the previous decode error's doing (``_poisoned``); otherwise the error is this ticket's.
        """
        ticket = self._flight.popleft()
        try:
            # cuda_stream None returns host-synchronous outputs (the CPU case).
            outputs = self._pipe.outputs(self.stream if self.device == "gpu" else None)
        except Exception as exc:  # noqa: BLE001 - kept for result() to raise in the caller's frame
            if is_decode_error(exc):
                self._poisoned = True
                self._done[ticket.number] = exc
                return
            retry = self._poisoned and ticket.attempts == 1
            behind = [ticket] if retry else []
            if not retry:
                self._done[ticket.number] = exc
            behind.extend(self._flight)
            self._flight.clear()
            log.warning("DALI pipeline discarded after an error (%s); %d batches fed again", type(exc).__name__, len(behind))
            self._discard()
            for again in behind:
                again.attempts += 1
                self._feed(again)
            return
        self._poisoned = False
        original, segmented, count, shapes = outputs
        self._done[ticket.number] = GraphBatch(
            original=self._images(original),
            segmented=self._images(segmented),
            mask_pixels=self._host(count).reshape(-1).astype(np.int64),
            shapes=self._host(shapes).reshape(-1, 3).astype(np.int64),
            keepalive=(original, segmented),
        )

    def _images(self, tensor_list: Any) -> Any:
        if self.device == "cpu":
            return np.asarray(tensor_list.as_array())
        import cupy

        with self.stream:
            # __dlpack__ receives this stream and makes it wait for DALI's stream if needed.
            try:
                return cupy.from_dlpack(tensor_list.as_tensor())
            except RuntimeError:
                # Not viewable as one tensor (e.g. samples left in two buffers by the resize
                # conditional): gather the samples on the GPU, still no host copy.
                return cupy.stack([cupy.from_dlpack(tensor_list[i]) for i in range(len(tensor_list))])

    @staticmethod
    def _host(tensor_list: Any) -> npt.NDArray[Any]:
        if hasattr(tensor_list, "as_cpu"):  # TensorListGPU: a small synchronous copy of per-sample scalars
            tensor_list = tensor_list.as_cpu()
        return np.asarray(tensor_list.as_array())

    def close(self) -> None:
        """Collect what is still in flight and give the pipeline back to the process cache (dropped instead
        when an error of its last batch leaves it in doubt)."""
        while self._flight and self._pipe is not None:
            self._collect_oldest()
        self._done.clear()
        pipe, self._pipe = self._pipe, None
        if pipe is not None and not self._poisoned:
            pipeline_cache.release(self.key, pipe)
        self._poisoned = False
