"""The rows one flushed batch adds to results.h5 (host memory, the writer's input)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass
class ResultRows:
    """n rows, in input order. Failed images have NaN probabilities, label -1 and mask_fraction NaN.

    paths: relative to the input root, POSIX separators. sha256: 64 hex chars, "" when unreadable.
    status: (n,) int8 ``ImageStatus`` values. errors: "" when ok.
    probs: (n, 4) float32. labels: (n,) int8 argmax or -1. mask_fraction: (n,) float32 in [0, 1].
    file_stat: (n, 3) int64 size, mtime_ns, ctime_ns of each file when read (-1 unknown); None: all unknown.
    index: (n,) int64 position of each file in the discovered order (the row's key across shards and
    executors); None when the caller has no discovered list (stored as -1).
    qc: the /qc columns by key (allbatch/qc/schema.py), n rows each; missing keys are written as
    their failed-row fill value.
    """

    paths: list[str]
    sha256: list[str]
    status: npt.NDArray[np.int8]
    errors: list[str]
    probs: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int8]
    mask_fraction: npt.NDArray[np.float32]
    file_stat: npt.NDArray[np.int64] | None = None
    index: npt.NDArray[np.int64] | None = None
    qc: dict[str, npt.NDArray[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)
