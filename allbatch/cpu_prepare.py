"""CPU preparation: Pillow decode, NumPy segmentation, resize and normalise (the reference path)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from allbatch.decode import DEFAULT_MAX_PIXELS, DecodeFailure, decode_rgb
from allbatch.preprocess import Preprocessing, blank_bottom_band, normalise_pair, resize_rgb
from allbatch.records import EncodedImage, PreparedBatch
from allbatch.segment import SegmentationParams, segment
from allbatch.status import ImageStatus


def prepare_one(
    data: bytes, prep: Preprocessing, seg: SegmentationParams, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[npt.NDArray[np.float32], float]:
    """Encoded bytes -> ((2, 3, S, S) float32 model input, mask fraction at native resolution).

    Raises:
        DecodeFailure: the bytes are not a usable image.
    """
    pair, fraction, _ = prepare_one_sized(data, prep, seg, max_pixels)
    return pair, fraction


def prepare_one_sized(
    data: bytes, prep: Preprocessing, seg: SegmentationParams, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[npt.NDArray[np.float32], float, tuple[int, int]]:
    """``prepare_one`` plus the decoded (height, width), which quality control checks."""
    rgb = blank_bottom_band(decode_rgb(data, max_pixels), prep)
    segmented, mask = segment(rgb, seg)
    pair = normalise_pair(resize_rgb(rgb, prep.size), resize_rgb(segmented, prep.size), prep)
    return pair, float(mask.mean()), (int(rgb.shape[0]), int(rgb.shape[1]))


class PillowPreparer:
    """Preparer on the CPU: a small thread pool (Pillow and NumPy release the GIL for most of it)."""

    name = "cpu"

    def __init__(self, prep: Preprocessing, seg: SegmentationParams, threads: int = 2, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.prep = prep
        self.seg = seg
        self.max_pixels = max_pixels
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="allbatch-decode")

    def _prepare(self, image: EncodedImage) -> tuple[npt.NDArray[np.float32], float, tuple[int, int]] | None:
        if image.data is None or image.status != ImageStatus.OK:
            return None
        try:
            return prepare_one_sized(image.data, self.prep, self.seg, self.max_pixels)
        except DecodeFailure as failure:
            image.status = failure.status
            image.error = str(failure)
            return None

    def prepare(self, images: list[EncodedImage]) -> PreparedBatch:
        """Decode, segment and assemble ``images``; failed ones get their status and error set."""
        results = list(self._pool.map(self._prepare, images))
        pairs = [result[0] for result in results if result is not None]
        size = self.prep.size
        inputs = np.stack(pairs) if pairs else np.zeros((0, 2, 3, size, size), dtype=np.float32)
        fractions = np.array([np.nan if result is None else result[1] for result in results], dtype=np.float32)
        sizes = np.array([(0, 0) if result is None else result[2] for result in results], dtype=np.int32).reshape(-1, 2)
        return PreparedBatch(images=images, inputs=inputs, mask_fraction=fractions, sizes=sizes)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
