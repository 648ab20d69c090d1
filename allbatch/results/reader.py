"""Read the committed rows of a results.h5 into NumPy arrays (either layout, see schema.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from allbatch.qc.schema import QC_COLUMNS, empty_qc
from allbatch.results.schema import (
    ERROR,
    LABEL,
    MASK_FRACTION,
    PATH,
    PROBS,
    SHA256,
    STATUS,
    check_layout,
    open_h5,
    read_root_attrs,
    shadowed_rows,
)
from allbatch.status import ImageStatus


@dataclass
class ResultsTable:
    """Committed rows of a results file, in file order (host memory).

    rows: (n,) int64 row index in the file. paths, errors: (n,) object arrays of str.
    sha256: (n,) str ("" when unreadable). status: (n,) int8 ``ImageStatus``; a stale duplicate left
    by an interrupted run reads as SUPERSEDED. probs: (n, k) float32, NaN for failed images.
    labels: (n,) int8, -1 for failed images. mask_fraction: (n,) float32.
    attrs: the root attributes decoded (JSON ones parsed). class_names: k names, probs' column order.
    qc: the /qc columns by key (allbatch/qc/schema.py), fill values when the file predates them.
    """

    rows: npt.NDArray[np.int64]
    paths: npt.NDArray[np.object_]
    sha256: npt.NDArray[np.str_]
    status: npt.NDArray[np.int8]
    errors: npt.NDArray[np.object_]
    probs: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int8]
    mask_fraction: npt.NDArray[np.float32]
    attrs: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    qc: dict[str, npt.NDArray[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.qc = {**empty_qc(len(self.rows)), **self.qc}  # a table built without /qc: fill values (no flags)

    @property
    def flags(self) -> npt.NDArray[np.uint16]:
        """(n,) uint16 QcFlag bits (0 for failed images)."""
        return self.qc["flags"]

    def __len__(self) -> int:
        return len(self.rows)


def read_results(path: Path, include_superseded: bool = False) -> ResultsTable:
    """The committed rows of ``path`` ([0, n_committed)); without ``include_superseded`` only the
    live row of each path. ResultsFileError when ``path`` is missing, not HDF5, or not a results file."""
    path = Path(path)
    with open_h5(path, "r") as f:
        n = check_layout(f, str(path))
        attrs = read_root_attrs(f)
        paths = np.array(f[PATH].asstr()[:n].tolist(), dtype=object)
        status = f[STATUS][:n].astype(np.int8)
        status[shadowed_rows(paths.tolist(), status)] = ImageStatus.SUPERSEDED
        keep = np.ones(n, dtype=np.bool_) if include_superseded else status != ImageStatus.SUPERSEDED
        table = ResultsTable(
            rows=np.flatnonzero(keep).astype(np.int64),
            paths=paths[keep],
            sha256=np.array([s.decode("ascii") for s in f[SHA256][:n][keep].tolist()], dtype=np.str_),
            status=status[keep],
            errors=np.array(f[ERROR].asstr()[:n].tolist(), dtype=object)[keep],
            probs=f[PROBS][:n][keep].astype(np.float32),
            labels=f[LABEL][:n][keep].astype(np.int8),
            mask_fraction=f[MASK_FRACTION][:n][keep].astype(np.float32),
            attrs=attrs,
            class_names=list(attrs.get("class_names", [])),
            qc={c.key: f[c.name][:n][keep].astype(c.dtype) if c.name in f else empty_qc(int(keep.sum()))[c.key] for c in QC_COLUMNS},
        )
    return table
