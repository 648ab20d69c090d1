"""What flows between stages: one read file (``EncodedImage``) and one prepared batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from allbatch.status import ImageStatus


@dataclass
class EncodedImage:
    """One input file after the read stage (host memory).

    ``data`` is None when the file could not be read; ``status``/``error`` start as the read outcome
    and are updated by the decode stage. ``sha256`` is of the bytes read ("" when unreadable).
    """

    index: int
    relpath: str
    data: bytes | None
    sha256: str
    status: ImageStatus = ImageStatus.OK
    error: str = ""


@dataclass
class PreparedBatch:
    """A batch after decode, segment and assemble.

    images: every image of the batch in input order, statuses final for decoding.
    inputs: (n_ok, 2, 3, S, S) float32 model input for the images whose status is OK, in order;
        a NumPy array on the CPU path, a CuPy array on the GPU path.
    mask_fraction: (n,) float32 segmented fraction at native resolution, NaN for failed images.
    sizes: (n, 2) int32 native (height, width) after decoding, 0 for failed images; None when the
        preparer does not report them (quality control then skips the size check).
    """

    images: list[EncodedImage]
    inputs: Any
    mask_fraction: npt.NDArray[np.float32]
    sizes: npt.NDArray[np.int32] | None = None

    @property
    def ok_positions(self) -> list[int]:
        return [i for i, image in enumerate(self.images) if image.status == ImageStatus.OK]


class Preparer(Protocol):
    """Decode + segment + assemble for one batch; never raises for a bad image, marks it instead."""

    name: str

    def prepare(self, images: list[EncodedImage]) -> PreparedBatch: ...

    def close(self) -> None: ...
