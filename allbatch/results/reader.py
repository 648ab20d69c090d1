"""Read the committed rows of a results.h5 into NumPy arrays (either layout, see schema.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from allbatch.core.errors import ResultsFileError
from allbatch.core.status import ImageStatus
from allbatch.qc.schema import FLAGS, QC_COLUMNS, empty_qc
from allbatch.results.schema import (
    CHUNK_ROWS,
    ERROR,
    LABEL,
    MASK_FRACTION,
    PATH,
    PROBS,
    SHA256,
    STATUS,
    check_layout,
    iter_verified,
    open_h5,
    read_root_attrs,
    shadowed_rows,
)

READ_BLOCK_ROWS = 64 * CHUNK_ROWS
"""Rows read and verified at a time (a damaged chunk spoils only its block)."""


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
    live row of each path.

    Every row's checksum is verified (schema.verify_rows). Raises ResultsFileError when ``path`` is
    missing, not HDF5, not a results file, or holds damaged rows (unreadable or failing their checksum).
    """
    path = Path(path)
    with open_h5(path, "r") as f:
        n = check_layout(f, str(path))
        attrs = read_root_attrs(f)
        class_names = list(attrs.get("class_names", []))
        blocks: list[dict[str, Any]] = []
        damaged = 0
        first_damage = ""
        for start, columns, valid, why in iter_verified(f, n, class_names, READ_BLOCK_ROWS):
            if not valid.all():
                if not damaged:
                    first_damage = f"row {start + int(np.flatnonzero(~valid)[0])}: {why}"
                damaged += int((~valid).sum())
            if columns is not None:
                blocks.append(columns)
    if damaged:
        raise ResultsFileError(
            f"{path} is damaged: {damaged} of {n} committed rows fail verification ({first_damage}); "
            "re-run allbatch run with --resume on it to redo them"
        )
    columns = {name: np.concatenate([block[name] for block in blocks]) for name in blocks[0]} if blocks else _no_rows(len(class_names))
    paths = np.asarray(columns[PATH], dtype=object)
    status = np.asarray(columns[STATUS], dtype=np.int8).copy()
    status[shadowed_rows(paths.tolist(), status)] = ImageStatus.SUPERSEDED
    keep = np.ones(n, dtype=np.bool_) if include_superseded else status != ImageStatus.SUPERSEDED
    return ResultsTable(
        rows=np.flatnonzero(keep).astype(np.int64),
        paths=paths[keep],
        sha256=np.array([s.decode("ascii") for s in np.asarray(columns[SHA256])[keep].tolist()], dtype=np.str_),
        status=status[keep],
        errors=np.asarray(columns[ERROR], dtype=object)[keep],
        probs=np.asarray(columns[PROBS], dtype=np.float32)[keep],
        labels=np.asarray(columns[LABEL], dtype=np.int8)[keep],
        mask_fraction=np.asarray(columns[MASK_FRACTION], dtype=np.float32)[keep],
        attrs=attrs,
        class_names=class_names,
        qc={
            c.key: np.asarray(columns[c.name], dtype=c.dtype)[keep] if c.name in columns else empty_qc(int(keep.sum()))[c.key]
            for c in QC_COLUMNS
        },
    )


def _no_rows(n_classes: int) -> dict[str, Any]:
    return {
        PATH: np.zeros(0, dtype=object),
        SHA256: np.zeros(0, dtype="S64"),
        STATUS: np.zeros(0, dtype=np.int8),
        ERROR: np.zeros(0, dtype=object),
        PROBS: np.zeros((0, n_classes), dtype=np.float32),
        LABEL: np.zeros(0, dtype=np.int8),
        MASK_FRACTION: np.zeros(0, dtype=np.float32),
    }


def read_labels(path: Path, rows: Sequence[int]) -> npt.NDArray[np.int8]:
    """``/pred/label`` at committed ``rows`` of ``path`` (any order), -1 for failed images."""
    return read_labels_and_flags(path, rows)[0]


def read_labels_and_flags(path: Path, rows: Sequence[int]) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.uint16]]:
    """``/pred/label`` (-1 for failed images) and ``/qc/flags`` (0 in a file without /qc) at committed ``rows``
    of ``path`` (any order)."""
    index = np.asarray(rows, dtype=np.int64)
    with open_h5(Path(path), "r") as f:
        n = check_layout(f, str(path))
        labels = f[LABEL][:n].astype(np.int8)  # one int8 column: 1 MB per million rows
        flags = f[FLAGS][:n].astype(np.uint16) if FLAGS in f else np.zeros(n, dtype=np.uint16)
    return labels[index], flags[index]


@dataclass(frozen=True)
class ResultsState:
    """Whether a results file was finished. ``finished``: a run closed it normally (compact layout);
    False when the last run was killed or interrupted (working layout: resume with ``--resume``)."""

    n_committed: int
    finished: bool


def results_state(path: Path) -> ResultsState:
    """Cheap look at ``path`` (no rows read); ResultsFileError as ``read_results``."""
    with open_h5(Path(path), "r") as f:
        n = check_layout(f, str(path))
        finished = f[STATUS].compression is not None  # the working layout is unfiltered, the compact one gzip
    return ResultsState(n_committed=n, finished=finished)


def incomplete_run_warning(path: Path) -> str | None:
    """A one-line warning when ``path`` was left by a run that did not finish, else None."""
    state = results_state(path)
    if state.finished:
        return None
    return (
        f"{path} is from a run that did not finish (interrupted or killed): {state.n_committed} committed rows; "
        "re-run allbatch run with --resume to complete it"
    )
