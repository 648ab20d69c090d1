"""``DaliPreparer``: the Preparer that decodes, segments and resizes with DALI and assembles the batch.

``device="gpu"``: nvJPEG decode and GPU arithmetic, the model input is a CuPy array built on the GPU
(no host copy of image data). ``device="cpu"``: the same graph on DALI's CPU operators, the model input
is a NumPy array (what CI runs; equal to the Pillow/NumPy path for images already at the model size).

Running ahead (issue 22): ``prepare`` is ``finish(start(images))``. ``start`` checks the files (on worker
threads) and feeds them to DALI; ``finish`` takes DALI's outputs, isolates bad files and assembles. The
run's producer starts batch k+1 before it finishes batch k (``allbatch.run.engine``), so DALI decodes one
batch while the producer checks the next and assembles the last; the order of the batches never changes.

Stream contract (GPU): all work of ``finish`` is ordered on the preparer's own CuPy stream, and
``finish`` synchronises that stream before returning, so the returned CuPy array is complete and may be
read from any stream or thread (e.g. the backend's stream in the consumer thread) without more waiting.
That wait is in the producer thread, which runs ahead of the network, not in the consumer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from allbatch.core.records import EncodedImage, PreparedBatch
from allbatch.core.status import ImageStatus
from allbatch.input.image_check import DEFAULT_MAX_PIXELS, DecodeFailure, ImageHeader, check_image
from allbatch.prepare.assemble import InputDtype, assemble_pair
from allbatch.prepare.dali.graph import Device
from allbatch.prepare.dali.isolation import (
    Isolated,
    dali_error_message,
    drop_and_rerun,
    failed_sample,
    is_decode_error,
    is_host_memory_error,
)
from allbatch.prepare.dali.pipeline import DEFAULT_PREFETCH_DEPTH, DaliRunner, GraphBatch
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.segment import SegmentationParams

log = logging.getLogger("allbatch.prepare.dali.preparer")


DEFAULT_MAX_RUN_PIXELS = 48 << 20
"""Decoded pixels per DALI run (about 50 MP). Every graph node is a full-resolution buffer, and DALI keeps
them for the whole batch: the CPU executor peaks at about 66 bytes per input pixel (8 x 3 MP frames), so
this bounds a run to a few GB, however large the frames and the batch. 224-px crops are never split by it
(about 1,000 per run); 3 MP camera fields go about 16 per run."""


def pixel_bounded_chunks(pixels: Sequence[int], max_items: int, max_pixels: int) -> list[range]:
    """Consecutive index ranges of at most ``max_items`` entries whose ``pixels`` add up to at most ``max_pixels``.

    An entry above ``max_pixels`` on its own gets a range of its own (it still has to run).
    """
    if max_items < 1 or max_pixels < 1:
        raise ValueError(f"max_items and max_pixels must be positive, got {max_items} and {max_pixels}")
    chunks: list[range] = []
    start, total = 0, 0
    for index, count in enumerate(pixels):
        if index > start and (index - start == max_items or total + count > max_pixels):
            chunks.append(range(start, index))
            start, total = index, 0
        total += count
    if start < len(pixels):
        chunks.append(range(start, len(pixels)))
    return chunks


@dataclass
class _Candidate:
    """An image that passed the header checks: its position in the batch and its header."""

    position: int
    data: bytes
    header: ImageHeader


@dataclass
class PendingBatch:
    """A batch ``DaliPreparer.start`` fed to DALI: its images, and each DALI run's candidates and ticket."""

    images: list[EncodedImage]
    runs: list[tuple[list[_Candidate], int]]


@dataclass
class _Part:
    """Rows of one successful DALI run: batch positions, and which graph rows to keep."""

    positions: list[int]
    rows: list[int]
    graph: GraphBatch


class DaliPreparer:
    """Preparer on DALI (GPU or CPU operators); marks bad images instead of raising.

    Args:
        prep, seg: preprocessing and segmentation of the model manifest.
        device: "gpu" (mixed decoder, CuPy output) or "cpu" (CPU operators, NumPy output).
        max_batch: the most images one DALI run takes (larger batches are split).
        num_threads: DALI CPU worker threads.
        device_id: CUDA device ("gpu" only).
        max_pixels: images with more pixels are refused (status too_large) before decoding.
        input_dtype: model input element type; float32 unless an engine takes float16.
        max_run_pixels: decoded pixels per DALI run (``DEFAULT_MAX_RUN_PIXELS``): bounds DALI's memory.
        prefetch_depth: DALI runs in flight at most (``DaliRunner``); 1 decodes each batch while the caller waits.
        fancy_upsampling: the decoder's ``jpeg_fancy_upsampling`` (``graph.decode``): on, the GPU upsamples JPEG
            chroma as the CPU path does.
    """

    def __init__(
        self,
        prep: Preprocessing,
        seg: SegmentationParams,
        device: Device = "gpu",
        max_batch: int = 64,
        num_threads: int = 2,
        device_id: int = 0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        input_dtype: InputDtype = "float32",
        max_run_pixels: int = DEFAULT_MAX_RUN_PIXELS,
        prefetch_depth: int = DEFAULT_PREFETCH_DEPTH,
        fancy_upsampling: bool = True,
    ) -> None:
        self.name = "dali" if device == "gpu" else "dali-cpu"
        self.prep = prep
        self.seg = seg
        self.device: Device = device
        self.max_batch = max_batch
        self.max_pixels = max_pixels
        self.input_dtype: InputDtype = input_dtype
        self.max_run_pixels = max_run_pixels
        self.runs = 0
        """DALI runs asked for by ``prepare`` (before any bisection of a failing run)."""
        self.prefetch_depth = prefetch_depth
        self.runner = DaliRunner(
            prep, seg, device, max_batch, num_threads, device_id, prefetch_depth=prefetch_depth, fancy_upsampling=fancy_upsampling
        )
        self._checker = ThreadPoolExecutor(max_workers=max(1, num_threads), thread_name_prefix="allbatch-check")

    def _check(self, image: EncodedImage) -> ImageHeader | None:
        """The shared acceptance rule for one image (marks it and returns None when refused)."""
        if image.data is None or image.status != ImageStatus.OK:
            return None
        try:
            return check_image(image.data, self.max_pixels)
        except DecodeFailure as failure:
            image.status = failure.status
            image.error = str(failure)
            return None

    def _candidates(self, images: list[EncodedImage]) -> list[_Candidate]:
        # The strict JPEG check decodes entropy data on the host (libjpeg-turbo releases the GIL):
        # spread it over the worker threads so it does not cap a GPU run at one core's rate.
        headers = list(self._checker.map(self._check, images))
        return [
            _Candidate(position, image.data, header)
            for position, (image, header) in enumerate(zip(images, headers, strict=True))
            if header is not None and image.data is not None
        ]

    def ready(self) -> None:
        """Build (or borrow from the process cache) the warmed DALI pipeline now: start-up, before the run's clock."""
        self.runner.ready()

    def _run(self, chunk: list[_Candidate]) -> GraphBatch:
        return self.runner.run([c.data for c in chunk], [c.header.height for c in chunk])

    def start(self, images: list[EncodedImage]) -> PendingBatch:
        """Check ``images`` and feed the accepted ones to DALI (in runs bounded by ``max_batch`` and
        ``max_run_pixels``); DALI starts decoding at once. Refused images get their status here."""
        candidates = self._candidates(images)
        pixels = [c.header.height * c.header.width for c in candidates]
        runs = []
        for span in pixel_bounded_chunks(pixels, self.max_batch, self.max_run_pixels):
            chunk = candidates[span.start : span.stop]
            self.runs += 1
            runs.append((chunk, self.runner.submit([c.data for c in chunk], [c.header.height for c in chunk])))
        return PendingBatch(images, runs)

    def _decode(self, pending: PendingBatch) -> list[_Part]:
        images = pending.images
        parts: list[_Part] = []
        for chunk, ticket in pending.runs:
            try:
                isolated = Isolated(chunks=[(list(range(len(chunk))), self.runner.result(ticket))], runs=1)
            except Exception as exc:  # noqa: BLE001 - drop_and_rerun re-raises what is not an item's fault
                isolated = drop_and_rerun(chunk, exc, self._run, lambda e: is_decode_error(e) or is_host_memory_error(e), failed_sample)
            if isolated.failures:
                log.info("%d of %d images failed to decode in DALI (%d runs)", len(isolated.failures), len(chunk), isolated.runs)
            for index, error in isolated.failures.items():
                image = images[chunk[index].position]
                if is_host_memory_error(error):
                    header = chunk[index].header
                    image.status = ImageStatus.TOO_LARGE
                    image.error = f"not enough memory to prepare {header.width * header.height} pixels"
                else:
                    image.status = ImageStatus.DECODE_ERROR
                    image.error = dali_error_message(error)
            for indices, graph in isolated.chunks:
                parts.append(self._checked_part(images, [chunk[i] for i in indices], graph))
        return parts

    def _checked_part(self, images: list[EncodedImage], chunk: list[_Candidate], graph: GraphBatch) -> _Part:
        """Keep the rows whose decoded size agrees with the header (the blanked band depends on it)."""
        positions, rows = [], []
        for row, candidate in enumerate(chunk):
            height, width = int(graph.shapes[row, 0]), int(graph.shapes[row, 1])
            header = candidate.header
            if self.prep.blank_bottom_fraction > 0 and (height, width) != (header.height, header.width):
                image = images[candidate.position]
                image.status = ImageStatus.UNSUPPORTED
                image.error = f"decoded {width}x{height} but the header says {header.width}x{header.height} (EXIF orientation?)"
                continue
            positions.append(candidate.position)
            rows.append(row)
        return _Part(positions, rows, graph)

    def prepare(self, images: list[EncodedImage]) -> PreparedBatch:
        """Decode, segment and assemble ``images`` now (``finish(start(images))``); failed ones get their
        status and error set.

        Returns:
            inputs (n_ok, 2, 3, S, S) ``input_dtype``: NumPy ("cpu") or a complete CuPy array ("gpu").
        """
        return self.finish(self.start(images))

    def finish(self, pending: PendingBatch) -> PreparedBatch:
        """The prepared batch of a ``start``-ed one: DALI's outputs (bad files dropped and the rest run again,
        see ``isolation``), assembled. Batches must be finished in the order they were started."""
        images = pending.images
        parts = self._decode(pending)
        fractions = np.full(len(images), np.nan, dtype=np.float32)
        sizes = np.zeros((len(images), 2), dtype=np.int32)
        for part in parts:
            fractions[part.positions] = part.graph.mask_fraction[part.rows].astype(np.float32)
            sizes[part.positions] = part.graph.shapes[part.rows, :2].astype(np.int32)
        assembled = [p.positions for p in parts]
        ok = [i for i, image in enumerate(images) if image.status == ImageStatus.OK]
        if [p for positions in assembled for p in positions] != ok:
            raise RuntimeError("internal error: DALI rows do not match the images marked ok")
        inputs = self._assemble_gpu(parts, len(ok)) if self.device == "gpu" else self._assemble_cpu(parts)
        return PreparedBatch(images=images, inputs=inputs, mask_fraction=fractions, sizes=sizes)

    def _assemble_cpu(self, parts: list[_Part]) -> Any:
        size = self.prep.size
        if not parts:
            return np.zeros((0, 2, 3, size, size), dtype=self.input_dtype)
        original = np.concatenate([p.graph.original[p.rows] for p in parts])
        segmented = np.concatenate([p.graph.segmented[p.rows] for p in parts])
        return assemble_pair(np, original, segmented, self.prep, self.input_dtype)

    def _assemble_gpu(self, parts: list[_Part], n_ok: int) -> Any:
        import cupy

        size = self.prep.size
        stream = self.runner.stream
        with stream:
            out = cupy.empty((n_ok, 2, 3, size, size), dtype=self.input_dtype)
            offset = 0
            for part in parts:
                graph, rows = part.graph, part.rows
                original, segmented = graph.original, graph.segmented
                if len(rows) != original.shape[0]:  # a row was refused: gather the kept ones on the GPU
                    index = cupy.asarray(rows)
                    original, segmented = original[index], segmented[index]
                assemble_pair(cupy, original, segmented, self.prep, self.input_dtype, out=out[offset : offset + len(rows)])
                offset += len(rows)
        # The DALI buffers behind ``parts`` must outlive the kernels, and the consumer may use another
        # stream: finish here, once per batch.
        stream.synchronize()
        return out

    def close(self) -> None:
        self._checker.shutdown(wait=True)
        self.runner.close()
