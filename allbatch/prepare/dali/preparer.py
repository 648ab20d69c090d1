"""``DaliPreparer``: the Preparer that decodes, segments and resizes with DALI and assembles the batch.

``device="gpu"``: nvJPEG decode and GPU arithmetic, the model input is a CuPy array built on the GPU
(no host copy of image data). ``device="cpu"``: the same graph on DALI's CPU operators, the model input
is a NumPy array (what CI runs; equal to the Pillow/NumPy path for images already at the model size).

Stream contract (GPU): all work of ``prepare`` is ordered on the preparer's own CuPy stream, and
``prepare`` synchronises that stream before returning, so the returned CuPy array is complete and may be
read from any stream or thread (e.g. the backend's stream in the consumer thread) without more waiting.
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
from allbatch.prepare.dali.isolation import dali_error_message, is_decode_error, is_host_memory_error, run_isolating
from allbatch.prepare.dali.pipeline import DaliRunner, GraphBatch
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
        self.runner = DaliRunner(prep, seg, device, max_batch, num_threads, device_id)
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

    def _run(self, chunk: list[_Candidate]) -> GraphBatch:
        return self.runner.run([c.data for c in chunk], [c.header.height for c in chunk])

    def _decode(self, images: list[EncodedImage], candidates: list[_Candidate]) -> list[_Part]:
        parts: list[_Part] = []
        pixels = [c.header.height * c.header.width for c in candidates]
        for span in pixel_bounded_chunks(pixels, self.max_batch, self.max_run_pixels):
            chunk = candidates[span.start : span.stop]
            self.runs += 1
            isolated = run_isolating(chunk, self._run, lambda exc: is_decode_error(exc) or is_host_memory_error(exc))
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
        """Decode, segment and assemble ``images``; failed ones get their status and error set.

        Returns:
            inputs (n_ok, 2, 3, S, S) ``input_dtype``: NumPy ("cpu") or a complete CuPy array ("gpu").
        """
        parts = self._decode(images, self._candidates(images))
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
