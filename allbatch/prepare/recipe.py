"""The one preparation recipe on the CPU: encoded bytes -> the model's (2, 3, S, S) float32 input.

decode (``decode.decode_rgb``: EXIF orientation, 16-bit, palette, CMYK, alpha) -> blank the bottom band
(the scale-bar label) -> [an optional change of the original: training augmentation or a robustness
perturbation] -> segment at native resolution -> resize both images to S x S -> normalise.

Inference (``cpu_prepare``), training (``training.data``), validation (``factory/scripts/validate_model.py``),
the robustness suite (``evaluation.robustness``) and the benchmark call these functions; nothing else
re-implements a step. The GPU path (``allbatch.prepare.dali``) implements the same recipe in DALI/CuPy and is
tested against this one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from allbatch.input.decode import DEFAULT_MAX_PIXELS, decode_rgb
from allbatch.prepare.assemble import normalise_pair
from allbatch.prepare.preprocessing import Preprocessing, blank_bottom_band, resize_rgb
from allbatch.prepare.segment import SegmentationParams, segment

ImageChange = Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]]
"""(H, W, 3) uint8 RGB -> (H', W', 3) uint8 RGB; applied to the original before segmentation."""


@dataclass(frozen=True)
class PreparedImage:
    """One prepared image.

    inputs: (2, 3, S, S) float32, host memory: the original then its segmentation, normalised.
    mask_fraction: fraction of segmented pixels at the (changed) original's native resolution.
    size: the decoded original's native (height, width), before any change (quality control checks it).
    """

    inputs: npt.NDArray[np.float32]
    mask_fraction: float
    size: tuple[int, int] = (0, 0)


def read_rgb(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> npt.NDArray[np.uint8]:
    """Decode the file at ``path`` exactly as inference does: (H, W, 3) uint8 RGB, host memory.

    Raises:
        DecodeFailure: the file is not a usable image.
        OSError: the file cannot be read.
    """
    return decode_rgb(path.read_bytes(), max_pixels)


def prepare_rgb(
    rgb: npt.NDArray[np.uint8],
    prep: Preprocessing,
    seg: SegmentationParams,
    change: ImageChange | None = None,
    out: npt.NDArray[np.float32] | None = None,
) -> PreparedImage:
    """A decoded (H, W, 3) uint8 RGB original -> its model input (blank, change, segment, resize, normalise).

    ``change`` (training augmentation, a robustness perturbation) sees the original after band blanking,
    so flips and rotations never move the label out of the blanked band, and the segmentation mask is
    always allbatch's own mask of exactly the pixels the model sees. ``out``: a C-contiguous (2, 3, S, S)
    float32 array (a row of a batch) that receives the input, which is then ``inputs`` (no copy into a batch).
    """
    original = blank_bottom_band(rgb, prep)
    if change is not None:
        original = np.ascontiguousarray(change(original))
    segmented, mask = segment(original, seg)
    inputs = normalise_pair(resize_rgb(original, prep.size), resize_rgb(segmented, prep.size), prep, out)
    return PreparedImage(inputs=inputs, mask_fraction=float(mask.mean()), size=(int(rgb.shape[0]), int(rgb.shape[1])))


def prepare_bytes(
    data: bytes,
    prep: Preprocessing,
    seg: SegmentationParams,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    change: ImageChange | None = None,
    out: npt.NDArray[np.float32] | None = None,
) -> PreparedImage:
    """Encoded file bytes -> model input (see ``prepare_rgb``, also for ``out``).

    Raises:
        DecodeFailure: the bytes are not a usable image.
    """
    return prepare_rgb(decode_rgb(data, max_pixels), prep, seg, change, out)


def prepare_files(
    paths: list[Path], prep: Preprocessing, seg: SegmentationParams, change: ImageChange | None = None
) -> npt.NDArray[np.float32]:
    """(n, 2, 3, S, S) float32 inputs of ``paths`` (all must decode), each with ``change`` applied (see ``prepare_rgb``).

    Raises:
        DecodeFailure: a file is not a usable image (validation data is expected to be clean).
    """
    size = prep.size
    out = np.empty((len(paths), 2, 3, size, size), dtype=np.float32)
    for i, path in enumerate(paths):
        prepare_rgb(read_rgb(path), prep, seg, change, out=out[i])
    return out
