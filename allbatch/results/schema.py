"""The results.h5 layout: dataset names, dtypes, the two on-disk layouts, and root attributes.

```
/ attrs              schema_version, allbatch_version, created_utc, updated_utc, runs, run_history,
                     class_names (string array), compat (JSON: what a resume must match),
                     json_attrs / large_attrs (JSON lists of attribute names stored as JSON / in
                     /meta/attrs), and the caller's provenance (argv, backend, device, model...)
/meta/n_committed    int64 (1,)        rows [0, n_committed) are complete; later rows mean nothing
/images/path         vlen utf-8 (N,)   relative to the input root, POSIX separators
/images/sha256       S64 (N,)          hex sha256 of the bytes read, b"" when unreadable
/images/status       int8 (N,)         ImageStatus; attribute ``names`` = "0=ok,1=decode_error,..."
/images/error        vlen utf-8 (N,)   "" when ok
/pred/probs          float32 (N, 4)    attribute ``class_names``; NaN for failed images
/pred/label          int8 (N,)         argmax, -1 for failed images
/seg/mask_fraction   float32 (N,)      NaN for failed images
/qc/...              quality control per image: see allbatch/qc/schema.py (absent in older files)
```

Every row dataset is chunked along N (``CHUNK_ROWS`` rows). Two layouts share these names:

* **compact** (what a finished run leaves): N == n_committed, gzip level 4 on every dataset.
* **working** (while a run appends, and what a killed run leaves): N is a preallocated capacity
  >= n_committed, no filter, every chunk allocated when the file is built. Chunks then never move
  or change size, so an append rewrites bytes in place and touches no chunk index; see writer.py
  for why that is what makes the file survive SIGKILL.

Both are plain HDF5 (default library version bounds, superblock v0, built-in filters only).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import numpy.typing as npt
from h5py import h5d, h5p

from allbatch.errors import ResultsFileError
from allbatch.qc.schema import FLAGS, QC_COLUMNS, flags_bits_attr
from allbatch.status import ImageStatus

SCHEMA_VERSION = 1
CHUNK_ROWS = 1024
"""Rows per chunk: 64 KiB for /images/sha256, small enough to rewrite per batch, large enough to compress."""
GZIP_LEVEL = 4
ATTR_INLINE_MAX = 48 * 1024
"""Longest attribute value kept inline; an HDF5 v0 object header message holds at most 64 KiB."""

N_COMMITTED = "meta/n_committed"
LARGE_ATTRS_GROUP = "meta/attrs"
PATH = "images/path"
SHA256 = "images/sha256"
STATUS = "images/status"
ERROR = "images/error"
PROBS = "pred/probs"
LABEL = "pred/label"
MASK_FRACTION = "seg/mask_fraction"

RESERVED_ATTRS = frozenset(
    {
        "schema_version",
        "allbatch_version",
        "created_utc",
        "updated_utc",
        "runs",
        "run_history",
        "class_names",
        "compat",
        "json_attrs",
        "large_attrs",
    }
)
"""Root attributes the writer owns; a provenance dict may not use these names."""

_STR = h5py.string_dtype("utf-8")


@dataclass(frozen=True)
class RowDataset:
    """One per-row dataset: ``name`` in the file, element dtype and the shape of one row."""

    name: str
    dtype: Any
    row_shape: tuple[int, ...] = ()
    required: bool = True
    """False for datasets a reader may find absent (files written before they existed): /qc."""

    @property
    def is_vlen(self) -> bool:
        return h5py.check_string_dtype(np.dtype(self.dtype)) is not None


def row_datasets(n_classes: int) -> tuple[RowDataset, ...]:
    """The per-row datasets, in the order they are written."""
    return (
        RowDataset(PATH, _STR),
        RowDataset(SHA256, "S64"),
        RowDataset(STATUS, np.int8),
        RowDataset(ERROR, _STR),
        RowDataset(PROBS, np.float32, (n_classes,)),
        RowDataset(LABEL, np.int8),
        RowDataset(MASK_FRACTION, np.float32),
        *(RowDataset(c.name, c.dtype, c.row_shape, required=False) for c in QC_COLUMNS),
    )


def working_capacity(rows: int) -> int:
    """Rows a working file is built for: ``rows`` rounded up to whole chunks, at least one chunk."""
    return max(1, -(-rows // CHUNK_ROWS)) * CHUNK_ROWS


def create_datasets(f: h5py.File, class_names: list[str], rows: int, *, working: bool) -> None:
    """Create /meta/n_committed (= 0) and the row datasets with ``rows`` rows in an empty file.

    working=True: ``rows`` is the capacity, chunks unfiltered and allocated now (vlen ones written
    with the empty fill value, the others left unwritten). working=False: gzip, allocated on write.
    """
    f.create_dataset(N_COMMITTED, data=np.zeros(1, dtype=np.int64))
    for spec in row_datasets(len(class_names)):
        shape = (rows, *spec.row_shape)
        options: dict[str, Any] = {
            "shape": shape,
            "dtype": spec.dtype,
            "chunks": (CHUNK_ROWS, *spec.row_shape),
            "maxshape": (None, *spec.row_shape),
        }
        if working:
            dcpl = h5p.create(h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5d.ALLOC_TIME_EARLY)
            options["dcpl"] = dcpl
            # HDF5 refuses "never" for vlen types; their empty fill costs 16 bytes a row once.
            options["fill_time"] = "alloc" if spec.is_vlen else "never"
        else:
            options["compression"] = "gzip"
            options["compression_opts"] = GZIP_LEVEL
        f.create_dataset(spec.name, **options)
    f[STATUS].attrs["names"] = ImageStatus.names_attr()
    f[PROBS].attrs["class_names"] = class_names
    f[FLAGS].attrs["bits"] = flags_bits_attr()


def check_layout(f: h5py.File, where: str) -> int:
    """Raise ResultsFileError unless ``f`` is an allbatch results file this version reads; return n_committed."""
    if N_COMMITTED not in f or "schema_version" not in f.attrs:
        raise ResultsFileError(f"{where} is an HDF5 file but not an allbatch results file (no /{N_COMMITTED})")
    version = int(f.attrs["schema_version"])
    if version != SCHEMA_VERSION:
        raise ResultsFileError(f"{where} has results schema version {version}; this allbatch reads version {SCHEMA_VERSION}")
    class_names = decode_class_names(f.attrs["class_names"])
    missing = [spec.name for spec in row_datasets(len(class_names)) if spec.required and spec.name not in f]
    if missing:
        raise ResultsFileError(f"{where} is missing datasets {missing}; the file is damaged or not written by allbatch")
    n = int(f[N_COMMITTED][0])
    short = [spec.name for spec in row_datasets(len(class_names)) if spec.name in f and f[spec.name].shape[0] < n]
    if n < 0 or short:
        raise ResultsFileError(f"{where} claims {n} committed rows but {short or 'n_committed'} disagrees; the file is damaged")
    return n


def open_h5(path: Path, mode: Literal["r", "r+"]) -> h5py.File:
    """Open an existing results file; ResultsFileError with a one-line reason when that fails."""
    if not path.exists():
        raise ResultsFileError(f"results file not found: {path}")
    if path.is_dir():
        raise ResultsFileError(f"{path} is a folder, not a results file")
    try:
        return h5py.File(path, mode)
    except OSError as exc:
        if not h5py.is_hdf5(path):
            raise ResultsFileError(f"{path} is not an HDF5 file ({path.stat().st_size} bytes)") from None
        raise ResultsFileError(f"cannot open {path} ({exc}); is another allbatch run writing it?") from exc


def shadowed_rows(paths: Sequence[str], status: npt.NDArray[np.int8]) -> npt.NDArray[np.bool_]:
    """(n,) bool: rows not marked SUPERSEDED for which a later such row has the same path.

    The latest row of a path wins. A run killed after appending a redone file's new row but before
    marking its old row SUPERSEDED leaves both; this tells which one is stale.
    """
    out = np.zeros(len(paths), dtype=np.bool_)
    seen: set[str] = set()
    for i in range(len(paths) - 1, -1, -1):
        if status[i] == ImageStatus.SUPERSEDED:
            continue
        if paths[i] in seen:
            out[i] = True
        else:
            seen.add(paths[i])
    return out


def decode_class_names(value: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(value).tolist()]


def _encode(value: Any) -> tuple[Any, bool]:
    """(value to store, stored as JSON?) for one root attribute."""
    if isinstance(value, np.generic | np.ndarray):
        value = value.tolist()
    if isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value, False
    return json.dumps(value, sort_keys=True), True


def write_root_attrs(f: h5py.File, attrs: Mapping[str, Any]) -> None:
    """Write attributes into an empty file's root: str/int/float as they are, ``class_names`` as a
    string array, anything else (dict, list, bool, None) as a JSON string.

    Values longer than ATTR_INLINE_MAX characters go to a scalar string dataset /meta/attrs/<name>
    (listed in the ``large_attrs`` attribute) because a v0 object header message cannot hold them.
    """
    json_names: list[str] = []
    large: list[str] = []
    for name, value in attrs.items():
        if name in ("json_attrs", "large_attrs"):
            continue
        if name == "class_names":  # a real string array, so that any HDF5 reader lists it
            f.attrs[name] = np.array([str(v) for v in value], dtype=_STR)
            continue
        stored, is_json = _encode(value)
        if is_json:
            json_names.append(name)
        if isinstance(stored, str) and len(stored) > ATTR_INLINE_MAX:
            f.create_dataset(f"{LARGE_ATTRS_GROUP}/{name}", data=stored, dtype=_STR)
            large.append(name)
        else:
            f.attrs[name] = stored
    f.attrs["json_attrs"] = json.dumps(sorted(json_names))
    f.attrs["large_attrs"] = json.dumps(sorted(large))


def read_root_attrs(f: h5py.File) -> dict[str, Any]:
    """All root attributes decoded back: JSON ones parsed, large ones read from /meta/attrs."""
    out: dict[str, Any] = {}
    json_names = set(json.loads(_as_str(f.attrs.get("json_attrs", "[]"))))
    large = json.loads(_as_str(f.attrs.get("large_attrs", "[]")))
    raw: dict[str, Any] = {name: f.attrs[name] for name in f.attrs if name not in ("json_attrs", "large_attrs")}
    for name in large:
        raw[name] = f[f"{LARGE_ATTRS_GROUP}/{name}"][()]
    for name, value in raw.items():
        if name == "class_names":
            out[name] = decode_class_names(value)
        elif name in json_names:
            out[name] = json.loads(_as_str(value))
        elif isinstance(value, bytes | str):
            out[name] = _as_str(value)
        elif isinstance(value, np.generic):
            out[name] = value.item()
        else:
            out[name] = value
    return out


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
