"""The results.h5 layout: dataset names, dtypes, the two on-disk layouts, and root attributes.

```
/ attrs              schema_version, allbatch_version, created_utc, updated_utc, runs, run_history,
                     class_names (string array), compat (JSON: what a resume must match),
                     json_attrs / large_attrs (JSON lists of attribute names stored as JSON / in
                     /meta/attrs), and the caller's provenance (argv, backend, device, model...)
/meta/n_committed    int64 (1,)        rows [0, n_committed) are complete; later rows mean nothing
/images/path         vlen utf-8 (N,)   relative to the input root, POSIX separators; names that are not
                                       valid UTF-8 are escaped losslessly (allbatch.core.pathtext)
/images/index        int64 (N,)        position in the discovered order of the run that wrote the row
                                       (the key of a row across shards and Ray workers); -1 if none
/images/sha256       S64 (N,)          hex sha256 of the bytes read, b"" when unreadable
/images/status       int8 (N,)         ImageStatus; attribute ``names`` = "0=ok,1=decode_error,..."
/images/error        vlen utf-8 (N,)   "" when ok
/pred/probs          float32 (N, 4)    attribute ``class_names``; NaN for failed images
/pred/label          int8 (N,)         argmax, -1 for failed images
/seg/mask_fraction   float32 (N,)      NaN for failed images
/images/file_stat    int64 (N, 3)      size, mtime_ns, ctime_ns of the file when read; -1 unknown (an
                                       mtime_ns of -1 also means "modified just before it was read")
/images/row_crc      uint32 (N,)       CRC-32 of the row's other columns (``row_checksums``)
/qc/...              quality control per image: see allbatch/qc/schema.py (absent in older files)
```

Row checksums: every committed row carries the CRC-32 of its canonical bytes (``row_checksums``).
Readers and resumes verify each row (``verify_rows``): a flipped byte in a killed run's working file, a
damaged gzip chunk or a vlen heap that no longer reads makes those rows "damaged". A resume drops them
(their files are redone); ``read_results`` (eval, export) refuses the file with a one-line error. A
row marked SUPERSEDED gets its new checksum written before its new status, so an interrupted
supersede is recognised, while a status byte flipped to SUPERSEDED is not mistaken for one.

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
import os
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import numpy.typing as npt
from h5py import h5d, h5f, h5p

from allbatch.core.errors import ResultsFileError
from allbatch.core.pathtext import safe_text
from allbatch.core.status import ImageStatus
from allbatch.qc.schema import FLAGS, QC_COLUMNS, flags_bits_attr

SCHEMA_VERSION = 2
"""2 added /images/index, /images/file_stat, /images/row_crc and /qc; version 1 files are still read (unverified,
index -1, /qc fill values)."""
READABLE_SCHEMA_VERSIONS = (1, 2)
CHUNK_ROWS = 1024
"""Rows per chunk: 64 KiB for /images/sha256, small enough to rewrite per batch, large enough to compress."""
GZIP_LEVEL = 4
ATTR_INLINE_MAX = 48 * 1024
"""Longest attribute value kept inline; an HDF5 v0 object header message holds at most 64 KiB."""

N_COMMITTED = "meta/n_committed"
LARGE_ATTRS_GROUP = "meta/attrs"
PATH = "images/path"
INDEX = "images/index"
SHA256 = "images/sha256"
STATUS = "images/status"
ERROR = "images/error"
PROBS = "pred/probs"
LABEL = "pred/label"
MASK_FRACTION = "seg/mask_fraction"
FILE_STAT = "images/file_stat"
ROW_CRC = "images/row_crc"
GROUPS = "groups"
"""The per-folder table (``summarize.groups_h5``): derived from the live rows, not per-row, rewritten by whoever
finishes an output (a run, or ``merge`` for the merged rows)."""
VERSION_2_DATASETS = (INDEX, FILE_STAT, ROW_CRC, *(column.name for column in QC_COLUMNS))
"""Row datasets a version 1 file does not have (readers use their fill values)."""

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
_TRUNCATED = re.compile(r"truncated file: eof = (\d+).*stored_eof = (\d+)")


@dataclass(frozen=True)
class RowDataset:
    """One per-row dataset: ``name`` in the file, element dtype and the shape of one row."""

    name: str
    dtype: Any
    row_shape: tuple[int, ...] = ()

    @property
    def is_vlen(self) -> bool:
        """A string dtype (vlen or fixed-length S64: both get the "alloc" fill time in the working layout)."""
        return h5py.check_string_dtype(np.dtype(self.dtype)) is not None

    @property
    def is_text(self) -> bool:
        """A variable-length UTF-8 string dataset (read with ``asstr``)."""
        info = h5py.check_string_dtype(np.dtype(self.dtype))
        return info is not None and info.length is None


def row_datasets(n_classes: int) -> tuple[RowDataset, ...]:
    """The per-row datasets, in the order they are written."""
    return (
        RowDataset(PATH, _STR),
        RowDataset(INDEX, np.int64),
        RowDataset(SHA256, "S64"),
        RowDataset(STATUS, np.int8),
        RowDataset(ERROR, _STR),
        RowDataset(PROBS, np.float32, (n_classes,)),
        RowDataset(LABEL, np.int8),
        RowDataset(MASK_FRACTION, np.float32),
        RowDataset(FILE_STAT, np.int64, (3,)),
        RowDataset(ROW_CRC, np.uint32),
        *(RowDataset(c.name, c.dtype, c.row_shape) for c in QC_COLUMNS),
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


@contextmanager
def _root_attrs_of(where: str) -> Iterator[None]:
    """Turn what a damaged root attribute raises while it is decoded (bad JSON, bytes that are not UTF-8, a
    missing or mistyped attribute, an unreadable /meta/attrs dataset) into one ResultsFileError line."""
    try:
        yield
    except (ValueError, KeyError, TypeError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ResultsFileError(
            f"{where} is damaged: its root attributes do not read ({type(exc).__name__}: {_first_line(exc)}); "
            "restore it from a copy, or re-run with --overwrite"
        ) from None


def check_layout(f: h5py.File, where: str) -> int:
    """Raise ResultsFileError unless ``f`` is an allbatch results file this version reads; return n_committed."""
    if N_COMMITTED not in f or "schema_version" not in f.attrs:
        raise ResultsFileError(f"{where} is an HDF5 file but not an allbatch results file (no /{N_COMMITTED})")
    with _root_attrs_of(where):
        version = int(f.attrs["schema_version"])
        class_names = decode_class_names(f.attrs["class_names"])
    if version not in READABLE_SCHEMA_VERSIONS:
        raise ResultsFileError(f"{where} has results schema version {version}; this allbatch reads versions {READABLE_SCHEMA_VERSIONS}")
    specs = [spec for spec in row_datasets(len(class_names)) if version >= 2 or spec.name not in VERSION_2_DATASETS]
    missing = [spec.name for spec in specs if spec.name not in f]
    if missing:
        raise ResultsFileError(f"{where} is missing datasets {missing}; the file is damaged or not written by allbatch")
    try:
        n = int(f[N_COMMITTED][0])
    except OSError as exc:
        raise ResultsFileError(f"{where} is damaged: cannot read /{N_COMMITTED} ({_first_line(exc)})") from None
    short = [spec.name for spec in specs if f[spec.name].shape[0] < n]
    if n < 0 or short:
        raise ResultsFileError(f"{where} claims {n} committed rows but {short or 'n_committed'} disagrees; the file is damaged")
    return n


def row_checksums(columns: Mapping[str, Any]) -> npt.NDArray[np.uint32]:
    """(n,) uint32 CRC-32 per row over the canonical bytes of every row column except ``row_crc``.

    ``columns`` maps dataset names to arrays as stored: path and error as str, sha256 as bytes (S64),
    status int8, probs float32 (n, k), label int8, mask_fraction float32, file_stat int64 (n, 3), index int64,
    and the /qc columns (``allbatch.qc.schema.QC_COLUMNS``).
    Strings are length-prefixed so that no two rows share their bytes by shifting text between columns.
    """
    paths, errors, sha = columns[PATH], columns[ERROR], columns[SHA256]
    fixed = np.concatenate(
        [
            np.ascontiguousarray(columns[STATUS], dtype=np.int8).reshape(len(paths), -1).view(np.uint8),
            np.ascontiguousarray(columns[PROBS], dtype=np.float32).reshape(len(paths), -1).view(np.uint8),
            np.ascontiguousarray(columns[LABEL], dtype=np.int8).reshape(len(paths), -1).view(np.uint8),
            np.ascontiguousarray(columns[MASK_FRACTION], dtype=np.float32).reshape(len(paths), -1).view(np.uint8),
            np.ascontiguousarray(columns[FILE_STAT], dtype=np.int64).reshape(len(paths), -1).view(np.uint8),
            np.ascontiguousarray(columns[INDEX], dtype=np.int64).reshape(len(paths), -1).view(np.uint8),
            *(np.ascontiguousarray(columns[c.name], dtype=c.dtype).reshape(len(paths), -1).view(np.uint8) for c in QC_COLUMNS),
        ],
        axis=1,
    )
    out = np.empty(len(paths), dtype=np.uint32)
    for i in range(len(paths)):
        text = b"".join(_framed(value) for value in (str(paths[i]).encode("utf-8"), bytes(sha[i]), str(errors[i]).encode("utf-8")))
        out[i] = zlib.crc32(fixed[i].tobytes(), zlib.crc32(text))
    return out


def _framed(value: bytes) -> bytes:
    return len(value).to_bytes(4, "little") + value


def read_rows(f: h5py.File, start: int, stop: int, class_names: list[str]) -> dict[str, Any]:
    """Rows [start, stop) of every row dataset present, decoded (paths and errors as str).

    Raises:
        OSError: HDF5 cannot read them (a damaged chunk or heap).
        UnicodeDecodeError: a damaged string.
    """
    out: dict[str, Any] = {}
    for spec in row_datasets(len(class_names)):
        if spec.name not in f:
            continue
        dataset = f[spec.name]
        out[spec.name] = np.array(dataset.asstr()[start:stop], dtype=object) if spec.is_text else dataset[start:stop]
    return out


def verify_rows(columns: Mapping[str, Any]) -> npt.NDArray[np.bool_]:
    """(n,) bool: the rows whose checksum matches (all True for a version 1 file, which has none).

    A row whose checksum matches only with status SUPERSEDED is a supersede cut short after its
    checksum was written: valid, and its status is set to SUPERSEDED in ``columns`` (in place).
    """
    if ROW_CRC not in columns:
        return np.ones(len(columns[PATH]), dtype=np.bool_)
    stored = np.asarray(columns[ROW_CRC], dtype=np.uint32)
    valid = row_checksums(columns) == stored
    if not valid.all():
        as_superseded = {**columns, STATUS: np.full(len(stored), ImageStatus.SUPERSEDED, dtype=np.int8)}
        cut_short = ~valid & (np.asarray(columns[STATUS]) != ImageStatus.SUPERSEDED) & (row_checksums(as_superseded) == stored)
        columns[STATUS][cut_short] = ImageStatus.SUPERSEDED
        valid |= cut_short
    return valid


def iter_verified(
    f: h5py.File, n: int, class_names: list[str], block: int
) -> Iterator[tuple[int, dict[str, Any] | None, npt.NDArray[np.bool_], str]]:
    """Rows [0, n) in blocks: (start, columns or None when unreadable, valid mask, why not valid).

    ``block`` must be a multiple of CHUNK_ROWS so that a damaged chunk spoils exactly its block.
    """
    for start in range(0, n, block):
        stop = min(n, start + block)
        try:
            columns = read_rows(f, start, stop, class_names)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            yield start, None, np.zeros(stop - start, dtype=np.bool_), f"unreadable ({_first_line(exc)})"
            continue
        yield start, columns, verify_rows(columns), "checksum mismatch"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


PAGE = 4096
"""File-space alignment of everything allbatch allocates while writing (``open_for_writing``)."""


def open_for_writing(path: Path, mode: Literal["w", "r+"]) -> h5py.File:
    """Open ``path`` for writing ("w": create or truncate, "r+": an existing file) as every writing session of
    allbatch must (the writer's appends and rebuilds, merge, the folder table). OSError when it cannot be opened.

    - Page alignment of every allocation (``PAGE``). A SIGKILL can cut a write between two pages (the kernel
      stops copying at a page boundary when the process is killed), and HDF5 rewrites whole global-heap
      collections, object headers and chunks in place, including ones that hold committed rows (a later session
      puts new strings into an old collection's free space). Page-aligned allocations keep every such block of
      up to one page inside one page, so a rewrite of it lands whole or not at all; larger chunks only ever
      rewrite committed bytes with the same values.
    - No chunk cache and no sieve buffer (HDF5's raw-data caches for chunked and contiguous datasets). With them
      HDF5 keeps written data in memory and writes it when the dataset object is closed, which h5py does when
      Python frees the object: on a full disk that write fails inside a destructor (an ignored traceback per
      dataset), the dataset stays half-closed in HDF5, and HDF5's clean-up at interpreter exit crashes on it
      (exit 139). Without them every write reaches the file inside the call that makes it, where a failure is
      an ordinary exception, and closing a dataset writes nothing. Fewer bytes are written too: a partial
      write of an unfiltered chunk writes only the new rows, never a committed row again.
    - The default library version bounds (superblock v0), as h5py opens files.
    """
    fapl = h5p.create(h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5f.LIBVER_EARLIEST, h5f.LIBVER_LATEST)
    fapl.set_alignment(1, PAGE)
    metadata_cache, slots, _, w0 = fapl.get_cache()
    fapl.set_cache(metadata_cache, slots, 0, w0)
    fapl.set_sieve_buf_size(0)
    name = os.fsencode(path)
    fid = h5f.create(name, h5f.ACC_TRUNC, fapl=fapl) if mode == "w" else h5f.open(name, h5f.ACC_RDWR, fapl=fapl)
    return h5py.File(fid)


def open_h5(path: Path, mode: Literal["r", "r+"]) -> h5py.File:
    """Open an existing results file; ResultsFileError with a one-line reason when that fails."""
    if not path.exists():
        raise ResultsFileError(f"results file not found: {path}")
    if path.is_dir():
        raise ResultsFileError(f"{path} is a folder, not a results file")
    try:
        return open_for_writing(path, "r+") if mode == "r+" else h5py.File(path, "r")
    except OSError as exc:
        if not h5py.is_hdf5(path):
            raise ResultsFileError(f"{path} is not an HDF5 file ({path.stat().st_size} bytes)") from None
        reason = _first_line(exc)
        truncated = _TRUNCATED.search(reason)
        if truncated:
            raise ResultsFileError(
                f"{path} is truncated ({truncated.group(1)} of {truncated.group(2)} bytes): it was cut short by a copy or a disk "
                "problem (a killed run never does this); restore it, or use --overwrite to start again"
            ) from None
        if "lock" in reason.lower():
            raise ResultsFileError(f"cannot open {path}: it is locked; is another allbatch run writing it?") from None
        raise ResultsFileError(f"cannot open {path}: the file is damaged ({reason}); use --overwrite to start again") from None


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
    if isinstance(value, str):
        return safe_text(value), False  # e.g. an input_root that is not valid UTF-8
    if isinstance(value, int | float) and not isinstance(value, bool):
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
    """All root attributes decoded back: JSON ones parsed, large ones read from /meta/attrs. ResultsFileError
    (one line) when one does not decode (a damaged file)."""
    with _root_attrs_of(str(f.filename)):
        return _decode_root_attrs(f)


def _decode_root_attrs(f: h5py.File) -> dict[str, Any]:
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
