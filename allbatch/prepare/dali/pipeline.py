"""The ``@pipeline_def`` wrapper around ``dali_graph`` and a runner that feeds one batch of bytes at a time.

The graph is fed by ``fn.external_source`` (``batch=True``) with exactly the files of the batch: any
batch size from 1 to ``max_batch``, so output row i is input i, with no padding and no duplicates, and
the last partial batch is as exact as the others. ``prefetch_queue_depth=1``: ``run`` executes the
batch it was given and nothing ahead of it.

Streams (``device="gpu"``): DALI runs its GPU operators on its own internal CUDA stream. The runner
passes its consumer stream (a CuPy stream) to ``Pipeline.run(cuda_stream=...)``, so DALI makes that
stream wait for the outputs; the outputs are then taken with ``cupy.from_dlpack`` inside
``with stream:``, and DALI's ``__dlpack__`` (called with that stream) inserts an event wait if one is
still needed. Anything enqueued on the consumer stream afterwards (the assembly kernel) is therefore
ordered after DALI's work with no host synchronisation. The pipeline uses DALI's default (dynamic)
execution model, in which outputs are not recycled while referenced: the CuPy views stay valid for as
long as the caller holds them. The small per-sample metadata (pixel count, native shape) is copied to
the host, which waits for DALI's work to finish.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from allbatch.prepare.dali.graph import Device, blank_bottom, decode, hsv_threshold, mask_pixel_count, native_shape, resize_square
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.segment import SegmentationParams

log = logging.getLogger("allbatch.prepare.dali.pipeline")

ENCODED = "encoded"
BLANK_ANCHOR = "blank_anchor"
BLANK_ROWS = "blank_rows"


def build_pipeline(
    batch_size: int,
    device: Device,
    params: SegmentationParams,
    prep: Preprocessing,
    num_threads: int,
    device_id: int | None,
) -> Any:
    """Build (not yet run) the preparation pipeline.

    Inputs (external sources, host): ``encoded`` 1-D uint8 per sample; when
    ``prep.blank_bottom_fraction > 0`` also ``blank_anchor`` and ``blank_rows`` (1-element float32).
    Outputs, in order: original (S, S, 3) uint8 HWC, segmented (S, S, 3) uint8 HWC (both on
    ``device``), kept-pixel count (uint64 scalar, on ``device``), native shape (3,) int64 (host).

    Args:
        batch_size: the largest batch ``run`` will be given.
        device: "gpu" (mixed decoder, GPU operators) or "cpu" (CPU operators only).
        device_id: CUDA device for "gpu"; must be None for "cpu" so DALI creates no CUDA context.
    Returns:
        a built ``nvidia.dali.Pipeline``.
    """
    if device not in ("gpu", "cpu"):
        raise ValueError(f"device must be 'gpu' or 'cpu', got {device!r}")
    if device == "cpu" and device_id is not None:
        raise ValueError("a CPU pipeline takes device_id=None (DALI then runs without CUDA)")
    if device == "gpu" and device_id is None:
        raise ValueError("a GPU pipeline needs a device_id")
    from nvidia.dali import fn, pipeline_def
    from nvidia.dali.types import DALIDataType

    blanking = prep.blank_bottom_fraction > 0

    # Default (dynamic) executor: outputs stay valid while referenced. device_id=None is valid for DALI
    # (CPU-only) although its stub says int.
    @pipeline_def(
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=device_id,  # type: ignore[arg-type]
        prefetch_queue_depth=1,
        enable_conditionals=True,
    )
    def preparation_graph() -> tuple[Any, ...]:
        encoded = fn.external_source(name=ENCODED, batch=True, dtype=DALIDataType.UINT8, ndim=1, device="cpu")
        rgb = decode(encoded, device)
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


class DaliRunner:
    """Runs the preparation graph on lists of encoded files.

    After a failed ``run`` the pipeline is discarded (DALI may leave it unusable) and rebuilt by the next
    call. Not thread-safe: one runner serves one thread.

    Args:
        stream: for "gpu", the CuPy stream the outputs are ordered on (default: a new non-blocking one).
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
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if device not in ("gpu", "cpu"):
            raise ValueError(f"device must be 'gpu' or 'cpu', got {device!r}")
        self.prep = prep
        self.seg = seg
        self.device: Device = device
        self.max_batch = max_batch
        self.num_threads = max(1, num_threads)
        self.device_id = device_id if device == "gpu" else None
        self.stream = stream
        if device == "gpu" and stream is None:
            import cupy

            with cupy.cuda.Device(device_id):
                self.stream = cupy.cuda.Stream(non_blocking=True)
        self._pipe: Any = None
        self.builds = 0

    def _pipeline(self) -> Any:
        if self._pipe is None:
            self._pipe = build_pipeline(self.max_batch, self.device, self.seg, self.prep, self.num_threads, self.device_id)
            self.builds += 1
        return self._pipe

    def _inputs(self, encoded: Sequence[bytes], heights: Sequence[int] | None) -> dict[str, list[npt.NDArray[Any]]]:
        inputs = {ENCODED: [np.frombuffer(data, dtype=np.uint8) for data in encoded]}
        if self.prep.blank_bottom_fraction > 0:
            if heights is None or len(heights) != len(encoded):
                raise ValueError("blanking the bottom band needs each image's height")
            rows = [self.prep.blank_rows(height) for height in heights]
            inputs[BLANK_ANCHOR] = [np.array([height - row], dtype=np.float32) for height, row in zip(heights, rows, strict=True)]
            inputs[BLANK_ROWS] = [np.array([row], dtype=np.float32) for row in rows]
        return inputs

    def run(self, encoded: Sequence[bytes], heights: Sequence[int] | None = None) -> GraphBatch:
        """Decode, segment and resize ``encoded`` (1..max_batch files).

        Args:
            encoded: the files' bytes.
            heights: each image's height after EXIF orientation (needed only to blank the bottom band).
        Raises:
            RuntimeError: whatever DALI raises; a corrupt file fails the whole batch (see ``isolation``).
        """
        if not 1 <= len(encoded) <= self.max_batch:
            raise ValueError(f"batch of {len(encoded)} files, expected 1..{self.max_batch}")
        inputs = self._inputs(encoded, heights)
        pipe = self._pipeline()
        try:
            # cuda_stream is positional-only; None returns host-synchronous outputs (the CPU case).
            outputs = pipe.run(self.stream if self.device == "gpu" else None, **inputs)
        except Exception:
            self._pipe = None  # DALI may leave the pipeline unusable after an error: rebuild on the next call
            raise
        original, segmented, count, shapes = outputs
        return GraphBatch(
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
        """Release the pipeline (its threads and buffers)."""
        self._pipe = None
