"""``allbatch merge``: join the part files of a sharded run into one results.h5.

The parts must cut up one discovered list (same total and digest, see ``allbatch.input.shard``),
with the same model, preprocessing, segmentation and classes, each shard exactly once, and each part
complete: its live rows (not superseded) hold every index of its range exactly once and nothing
else. Anything else is refused with one error that names the parts and rows at fault.

The output is what a single-process run over the same folder writes: the same datasets (every
per-row dataset of the parts, whatever its group, so columns added later travel without changes
here), rows in discovered order, the compact layout, and the root attributes of a whole run, plus
``merged_from`` listing the parts. It is written beside the output and renamed over it, so a kill
leaves no half-merged file; the temporary copies of killed merges are removed by the next writer of the
output (under its lock). The folder table (``/groups``) is derived data: the parts' own tables are
dropped, and the caller (the ``merge`` command, the local executor) writes the merged rows' one under the
same lock (results/ does not summarise).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from allbatch.core.atomic_file import fsync_path, install, output_errors, remove_quietly, remove_stale, tmp_path
from allbatch.core.errors import UserInputError
from allbatch.core.status import ImageStatus
from allbatch.input.shard import DiscoveryRecord, Shard
from allbatch.results.lock import BorrowedLock, OutputLock, take_lock
from allbatch.results.schema import (
    CHUNK_ROWS,
    GROUPS,
    GZIP_LEVEL,
    INDEX,
    N_COMMITTED,
    PATH,
    STATUS,
    check_layout,
    open_for_writing,
    open_h5,
    read_root_attrs,
    shadowed_rows,
    write_root_attrs,
)

log = logging.getLogger("allbatch.results.merge")

META_GROUP = "meta"
DERIVED = (META_GROUP, GROUPS)
"""Top-level groups that are not rows: /meta (the commit counter, large attributes) and /groups (the folder
table of the part's own rows, which may by chance have as many folders as the part has rows). Neither is
merged row by row nor copied; the caller writes the merged rows' folder table (``summarize.groups_h5``)."""
EXAMPLES = 10
"""Rows named per problem in an error message (the count is always given)."""


class MergeError(UserInputError):
    """Parts that do not add up to one complete run; the message names the parts and rows at fault."""


@dataclass
class _Part:
    """One part file, checked: its shard, record, attributes, row datasets and live rows in index order."""

    path: Path
    shard: Shard
    record: DiscoveryRecord
    attrs: dict[str, Any]
    n_committed: int
    row_datasets: dict[str, tuple[Any, tuple[int, ...]]]
    """name -> (dtype, shape of one row) of every per-row dataset."""
    order: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """File rows of the live rows, sorted by their discovered index."""


@dataclass
class MergeSummary:
    """What ``merge_parts`` wrote: ``rows`` rows from ``parts`` part files into ``output``."""

    output: str
    parts: int
    rows: int
    datasets: list[str]


def _derived(name: str) -> bool:
    """True for an object inside (or being) one of the ``DERIVED`` top-level groups."""
    return name.split("/", 1)[0] in DERIVED


def row_dataset_names(f: h5py.File) -> dict[str, tuple[Any, tuple[int, ...]]]:
    """Every per-row dataset of a results file: each dataset outside /meta and /groups whose first axis has
    the length of /images/path (the row axis, in either layout). name -> (dtype, row shape)."""
    n_rows = f[PATH].shape[0]
    found: dict[str, tuple[Any, tuple[int, ...]]] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and not _derived(name) and obj.ndim >= 1 and obj.shape[0] == n_rows:
            found[name] = (obj.dtype, tuple(obj.shape[1:]))

    f.visititems(visit)
    return found


def _examples(values: Sequence[Any]) -> str:
    shown = ", ".join(str(v) for v in values[:EXAMPLES])
    return shown + (f", ... ({len(values)} in all)" if len(values) > EXAMPLES else "")


def _read_part(path: Path) -> tuple[_Part, list[str]]:
    """Open one part and check it on its own; returns it and its problems (empty when complete)."""
    with open_h5(path, "r") as f:
        n = check_layout(f, str(path))
        attrs = read_root_attrs(f)
        record = DiscoveryRecord.from_dict(attrs.get("discovery"), str(path))
        shard = record.parsed_shard
        if shard is None:
            raise MergeError(f"{path} is a whole run, not a part: it was written without --shard")
        part = _Part(path, shard, record, attrs, n, row_dataset_names(f))
        index = f[INDEX][:n].astype(np.int64)
        paths = f[PATH].asstr()[:n].tolist()
        status = f[STATUS][:n]
    live = np.flatnonzero((status != ImageStatus.SUPERSEDED) & ~shadowed_rows(paths, status))
    live_index = index[live]
    problems: list[str] = []
    where = f"{path} (shard {shard}, rows {record.start}..{record.stop - 1})"
    outside = [f"{i} ({paths[r]})" for r, i in zip(live.tolist(), live_index.tolist(), strict=True) if not record.start <= i < record.stop]
    if outside:
        problems.append(f"{where} has rows outside its range: index {_examples(outside)}")
    values, counts = np.unique(live_index, return_counts=True)
    doubled = values[counts > 1].tolist()
    if doubled:
        problems.append(f"{where} has indices with more than one live row: {_examples(doubled)}")
    missing = np.setdiff1d(np.arange(record.start, record.stop, dtype=np.int64), live_index).tolist()
    if missing:
        problems.append(
            f"{where} is incomplete: {len(missing)} of {record.stop - record.start} rows missing (index {_examples(missing)}); "
            f"finish it with `allbatch run SRC --shard {shard} --out {path} --resume`"
        )
    part.order = live[np.argsort(live_index, kind="stable")].astype(np.int64)
    return part, problems


def _compat_without_shard(attrs: dict[str, Any]) -> dict[str, Any]:
    compat = dict(attrs.get("compat") or {})
    compat.pop("shard", None)
    return compat


def _check_same_run(parts: list[_Part]) -> None:
    """Every part cut from the same discovered list, with the same model, preprocessing, segmentation,
    classes and per-row datasets; each shard exactly once."""
    first = parts[0]
    for part in parts[1:]:
        pair = f"{first.path} and {part.path}"
        if (part.record.total, part.record.sha256) != (first.record.total, first.record.sha256):
            raise MergeError(
                f"{pair} come from different discovered lists ({first.record.total} files, digest {first.record.sha256[:12]} vs "
                f"{part.record.total} files, {part.record.sha256[:12]}): the folder changed between the shards' runs"
            )
        if part.shard.count != first.shard.count:
            raise MergeError(f"{pair} split the list differently (shard {first.shard} vs {part.shard})")
        mine, theirs = _compat_without_shard(first.attrs), _compat_without_shard(part.attrs)
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) != theirs.get(key):
                raise MergeError(f"{pair} were written with a different {key}")
        if first.attrs.get("class_names") != part.attrs.get("class_names"):
            raise MergeError(f"{pair} have different class names")
        if {k: (np.dtype(d).str, s) for k, (d, s) in first.row_datasets.items()} != {
            k: (np.dtype(d).str, s) for k, (d, s) in part.row_datasets.items()
        }:
            raise MergeError(f"{pair} have different per-row datasets ({sorted(first.row_datasets)} vs {sorted(part.row_datasets)})")
    by_shard: dict[int, list[_Part]] = {}
    for part in parts:
        by_shard.setdefault(part.shard.index, []).append(part)
    twice = [f"{k}/{first.shard.count} ({', '.join(str(p.path) for p in ps)})" for k, ps in sorted(by_shard.items()) if len(ps) > 1]
    if twice:
        raise MergeError(f"shards given more than once: {'; '.join(twice)}")
    absent = [Shard(k, first.shard.count) for k in range(first.shard.count) if k not in by_shard]
    if absent:
        ranges = [f"{s} (rows {s.bounds(first.record.total)[0]}..{s.bounds(first.record.total)[1] - 1})" for s in absent]
        raise MergeError(f"missing parts for shards {_examples(ranges)} of {first.record.total} discovered files")


def _merged_attrs(parts: list[_Part], argv: list[str]) -> dict[str, Any]:
    """The root attributes of a whole run: the first part's provenance, the whole list's discovery
    record, the compat key without the shard, a fresh history, and ``merged_from``."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    first = parts[0]
    attrs = dict(first.attrs)
    total = first.record.total
    attrs["discovery"] = DiscoveryRecord(total, first.record.sha256, None, 0, total).to_dict()
    attrs["compat"] = _compat_without_shard(first.attrs)
    attrs["created_utc"] = attrs["updated_utc"] = now
    attrs["runs"] = 1
    attrs["run_history"] = [{"started_utc": now, "mode": "merge", "argv": argv, "backend": first.attrs.get("backend")}]
    attrs["merged_from"] = [
        {
            "path": str(part.path.resolve()),
            "shard": str(part.shard),
            "rows": len(part.order),
            "host": part.attrs.get("host"),
            "device": part.attrs.get("device"),
            "backend": part.attrs.get("backend"),
            "argv": part.attrs.get("argv"),
            "created_utc": part.attrs.get("created_utc"),
            "updated_utc": part.attrs.get("updated_utc"),
        }
        for part in parts
    ]
    return attrs


def merge_parts(
    part_paths: Sequence[Path],
    output: Path,
    *,
    overwrite: bool = False,
    argv: list[str] | None = None,
    lock: OutputLock | BorrowedLock | None = None,
) -> MergeSummary:
    """Check the parts (module docstring) and write ``output``. Raises MergeError (a UserInputError)
    naming what is wrong; nothing is written then. ``lock``: the output's lock when the caller holds it
    (the local executor's run plan, the ``merge`` command, which then writes the folder table under it);
    else merge takes it while it writes. The output has no ``/groups``: the caller writes the merged rows' one."""
    paths = [Path(p) for p in part_paths]
    if not paths:
        raise MergeError("no part files given")
    output = Path(output)
    if any(p.resolve() == output.resolve() for p in paths if p.exists()):
        raise MergeError(f"--out {output} is one of the parts; write the merged file elsewhere")
    if len({p.resolve() for p in paths}) != len(paths):
        raise MergeError("the same part file is given twice")
    if output.exists() and not overwrite:
        raise UserInputError(f"{output} already exists; pass --overwrite to replace it")
    if not output.parent.is_dir():
        raise UserInputError(f"the folder for {output} does not exist")
    checked = [_read_part(p) for p in paths]
    parts = sorted((part for part, _ in checked), key=lambda part: part.shard.index)
    _check_same_run(parts)
    problems = [problem for _, found in checked for problem in found]
    if problems:
        raise MergeError("cannot merge: " + "; ".join(problems))
    lock = take_lock(output, lock)
    try:
        remove_stale(output)  # temporary copies killed writers of this output left (no live one: we hold its lock)
        with output_errors(output, "the parts are unchanged, and so is the output if it existed"):  # a full disk: one line
            tmp, digest = _write(parts, output, _merged_attrs(parts, argv or []))
            if digest != parts[0].record.sha256:
                remove_quietly(tmp)
                raise MergeError(
                    f"the parts' paths in index order do not reproduce the discovered list (digest {parts[0].record.sha256[:12]}): "
                    "a part was resumed over a different folder"
                )
            install(tmp, output)
    finally:
        lock.release()
    total = parts[0].record.total
    log.info("merged %d parts into %s: %d rows", len(parts), output, total)
    return MergeSummary(str(output), len(parts), total, sorted(parts[0].row_datasets))


def _write(parts: list[_Part], output: Path, attrs: dict[str, Any]) -> tuple[Path, str]:
    """Write the merged file beside ``output``; return its temporary path and the digest of its paths in order.

    Datasets and groups outside /meta and /groups that are not per-row (none today) are copied from the first part."""
    total = parts[0].record.total
    tmp = tmp_path(output)
    digest = hashlib.sha256()
    try:
        with open_for_writing(tmp, "w") as dst:  # as every writing session
            dst.create_dataset(N_COMMITTED, data=np.zeros(1, dtype=np.int64))
            with h5py.File(parts[0].path, "r") as template:
                for name, (dtype, row_shape) in parts[0].row_datasets.items():
                    dst.create_dataset(
                        name,
                        shape=(total, *row_shape),
                        dtype=dtype,
                        chunks=(CHUNK_ROWS, *row_shape),
                        maxshape=(None, *row_shape),
                        compression="gzip",
                        compression_opts=GZIP_LEVEL,
                    )
                    for key, value in template[name].attrs.items():
                        dst[name].attrs[key] = value
                _copy_other_objects(template, dst, set(parts[0].row_datasets))
            write_root_attrs(dst, attrs)
            start = 0
            for part in parts:
                with h5py.File(part.path, "r") as src:
                    stop = start + len(part.order)
                    for name in part.row_datasets:
                        dst[name][start:stop] = src[name][: part.n_committed][part.order]
                    for relpath in src[PATH].asstr()[: part.n_committed][part.order].tolist():
                        digest.update(relpath.encode("utf-8", "surrogateescape") + b"\n")
                start = stop
            dst[N_COMMITTED][0] = total
        fsync_path(tmp)
    except BaseException:
        remove_quietly(tmp)
        raise
    return tmp, digest.hexdigest()


def _copy_other_objects(template: h5py.File, dst: h5py.File, row_names: set[str]) -> None:
    """Group attributes, and datasets that are not per-row, outside /meta and /groups: as the first part has them."""
    others: list[tuple[str, Any]] = []
    template.visititems(lambda name, obj: others.append((name, obj)) if not _derived(name) else None)
    for name, obj in others:
        if isinstance(obj, h5py.Group):
            group = dst.require_group(name)
            for key, value in obj.attrs.items():
                group.attrs[key] = value
        elif name not in row_names:
            template.copy(obj, dst, name=name)
