"""CPU preparation: the one preparation recipe (``allbatch.prepare.recipe``) over a batch, on a small thread pool.

Memory is bounded by a pixel budget, not by what headers claim: the decode threads together hold at
most ``pixel_budget`` pixels of decoded images (an image larger than the budget runs alone), and the
segmentation works in row stripes (``allbatch.prepare.segment.STRIPE_PIXELS``). About 14 bytes a pixel stay
live while one image is prepared (RGB, segmented RGB, mask, resize buffers). A MemoryError while
preparing one image becomes that image's status (too_large), never the end of the batch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt

from allbatch.core.records import EncodedImage, PreparedBatch
from allbatch.core.status import ImageStatus
from allbatch.input.decode import DEFAULT_MAX_PIXELS, DecodeFailure
from allbatch.input.image_check import read_header
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.recipe import prepare_bytes
from allbatch.prepare.segment import SegmentationParams


def prepare_one(
    data: bytes, prep: Preprocessing, seg: SegmentationParams, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[npt.NDArray[np.float32], float]:
    """Encoded bytes -> ((2, 3, S, S) float32 model input, mask fraction at native resolution).

    Raises:
        DecodeFailure: the bytes are not a usable image.
    """
    prepared = prepare_bytes(data, prep, seg, max_pixels)
    return prepared.inputs, prepared.mask_fraction


class PixelBudget:
    """Pixels of decoded images that may be in memory at once, shared by threads.

    ``hold(n)`` waits until ``n`` more pixels fit; a request larger than the whole budget waits until
    nothing else is held and then runs alone, so every image is eventually served.
    """

    def __init__(self, pixels: int) -> None:
        self.pixels = pixels
        self._used = 0
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: self._used == 0 or self._used + pixels <= self.pixels)
            self._used += pixels
        try:
            yield
        finally:
            with self._changed:
                self._used -= pixels
                self._changed.notify_all()


class PillowPreparer:
    """Preparer on the CPU: a small thread pool (Pillow and NumPy release the GIL for most of it).

    ``pixel_budget``: decoded pixels all threads may hold at once (default: one image at the limit).
    """

    name = "cpu"

    def __init__(
        self,
        prep: Preprocessing,
        seg: SegmentationParams,
        threads: int = 2,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        pixel_budget: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.prep = prep
        self.seg = seg
        self.max_pixels = max_pixels
        self.budget = PixelBudget(pixel_budget)
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="allbatch-decode")

    def _prepare(self, image: EncodedImage, out: npt.NDArray[np.float32]) -> tuple[float, tuple[int, int]] | None:
        """Prepare one image into ``out`` (its (2, 3, S, S) row of the batch); (mask fraction, size), or None
        when it failed (its status and error are set)."""
        if image.data is None or image.status != ImageStatus.OK:
            return None
        pixels = 0
        try:
            header = read_header(image.data, self.max_pixels)  # header only: what the budget must hold
            pixels = header.width * header.height
            with self.budget.hold(pixels):
                prepared = prepare_bytes(image.data, self.prep, self.seg, self.max_pixels, out=out)
            return prepared.mask_fraction, prepared.size
        except DecodeFailure as failure:
            image.status = failure.status
            image.error = str(failure)
        except MemoryError:
            image.status = ImageStatus.TOO_LARGE
            image.error = f"not enough memory to prepare {pixels} pixels"
        return None

    def prepare(self, images: list[EncodedImage]) -> PreparedBatch:
        """Decode, segment and assemble ``images``; failed ones get their status and error set."""
        size = self.prep.size
        rows = np.empty((len(images), 2, 3, size, size), dtype=np.float32)  # each image is prepared into its row
        results = list(self._pool.map(self._prepare, images, rows))
        ok = [i for i, result in enumerate(results) if result is not None]
        inputs = rows if len(ok) == len(images) else rows[ok]  # a copy only when some image failed
        fractions = np.array([np.nan if result is None else result[0] for result in results], dtype=np.float32)
        sizes = np.array([(0, 0) if result is None else result[1] for result in results], dtype=np.int32).reshape(-1, 2)
        return PreparedBatch(images=images, inputs=inputs, mask_fraction=fractions, sizes=sizes)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
