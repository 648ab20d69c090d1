"""Many nodes: ``allbatch run SRC --out results.h5 --executor ray`` on a Ray cluster, with Ray Data.

The driver (the process that runs this) discovers the files and hands (index, path, committed hash)
items to ``Dataset.map_batches`` with ``RowsActor``, a class Ray Data runs as a pool of actors: each
actor loads the model once (one GPU per actor where the cluster has GPUs) and turns a batch of items
into result rows with the same stages as a single run (read, prepare, infer, ``rows_for``). Every
input item gives one output row, failed images included (their status says why), so no bad image can
fail a Ray block; files that an earlier run committed with the same content hash come back marked
skipped, without inference (``allbatch.results.resume.plan``, as a single run does).

The driver is the only writer of results.h5 (rows are small: no parts, no merge). Ray does not keep
order, so rows are keyed by their discovered index: the driver appends them as they arrive, drops a
row whose index it already committed in this run (a retried task), and checks at the end that every
index came back exactly once. Ray Data restarts an actor whose process dies and retries its task, so a
killed worker loses nothing; if the driver itself dies, ``--resume`` continues from the committed rows.

Cluster: ``ray.init()`` joins the cluster named by ``RAY_ADDRESS`` (e.g. ``ray://head:10001`` or
``head:6379``), else starts a local one. Every node must see the input folder and the model at the
same paths (a shared file system) and have allbatch installed. The job's workers get an empty
``working_dir``, so that they never import Python code from the directory the run was started in
(``isolated_working_dir``); a caller that initialised Ray itself keeps its own runtime environment.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from allbatch import CLASS_NAMES
from allbatch.backends.base import InferenceOutput
from allbatch.core.errors import AllbatchError, BackendUnavailableError, UserInputError
from allbatch.core.records import EncodedImage, PreparedBatch
from allbatch.core.status import ImageStatus
from allbatch.input.discover import DiscoveredFile
from allbatch.input.read import read_encoded
from allbatch.qc.schema import empty_qc
from allbatch.qc.stage import QcStage
from allbatch.results.resume import plan
from allbatch.results.rows import ResultRows
from allbatch.run.config import ProgressCallback, RunConfig, RunProgress
from allbatch.run.engine import rows_for
from allbatch.run.plan import RunPlan, decoder_for, make_preparer, open_backend, open_checked_backend, plan_run
from allbatch.run.tally import RunSummary, Tally

if TYPE_CHECKING:
    from allbatch.results.writer import CommittedRow

log = logging.getLogger("allbatch.run.ray")

SKIPPED = "skipped"
"""Output column: True for a file an earlier run committed unchanged (no inference, nothing to write)."""
INSTALL_HINT = "--executor ray needs Ray Data: pip install 'allbatch[ray]'"
WRITE_ROWS = 1024
"""Rows the driver gathers from Ray's blocks into one commit: a commit costs milliseconds whatever its size
(writer.py), so the single writer's rows/s grows with it (benchmarks/README.md, "Beyond one GPU")."""
BLOCKS_PER_ACTOR = 4
"""Input blocks per actor at least, so that the pool stays busy and a retried task redoes little."""


NESTED = "."
"""Joins a dict-valued ResultRows field and its keys into one Ray column name (``qc.max_prob``)."""


def rows_to_columns(rows: ResultRows) -> dict[str, npt.NDArray[Any]]:
    """A ResultRows as a Ray Data numpy batch: one (n, ...) array per field (lists of str as object arrays).
    Generic over the fields, so columns added to ResultRows travel without changes here."""
    out: dict[str, npt.NDArray[Any]] = {}
    for spec in dataclasses.fields(rows):
        value = getattr(rows, spec.name)
        if isinstance(value, dict):  # e.g. the /qc columns by key: one Ray column each
            out.update({f"{spec.name}{NESTED}{key}": np.asarray(column) for key, column in value.items()})
        elif value is not None:
            out[spec.name] = np.array(value, dtype=object) if isinstance(value, list) else np.asarray(value)
    return out


def rows_from_columns(columns: Mapping[str, npt.NDArray[Any]], positions: npt.NDArray[np.int64]) -> ResultRows:
    """The rows at ``positions`` of a batch made by ``rows_to_columns`` (after its trip through Ray)."""
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(ResultRows):
        if spec.name in columns:
            column = np.asarray(columns[spec.name])[positions]
            values[spec.name] = [str(v) for v in column.tolist()] if str(spec.type).startswith("list") else column
        prefix = f"{spec.name}{NESTED}"
        nested = {name[len(prefix) :]: np.asarray(column)[positions] for name, column in columns.items() if name.startswith(prefix)}
        if nested:
            values[spec.name] = nested
    return ResultRows(**values)


@dataclass
class RemoteBackendInfo:
    """The backend an actor runs, as the driver records it in the provenance (``pipeline.BackendInfo``)."""

    name: str
    device: str
    details: dict[str, Any]
    decoder: str

    def describe(self) -> dict[str, Any]:
        return self.details


class RowsActor:
    """One Ray Data actor: the model loaded once, then ``__call__`` per batch of items.

    Input batch (numpy format, n items): ``index`` int64, ``path``/``relpath``/``problem`` str,
    ``committed_sha256`` str ("" when no earlier row) and ``committed_status`` int64 (-1 when none).
    Output: ``rows_to_columns`` of n rows plus ``skipped`` (n,) bool; skipped rows carry no result.
    """

    def __init__(self, config: RunConfig, backend: str, decoder: str) -> None:
        from allbatch.model.manifest import load_model_artifact

        artifact = load_model_artifact(config.model)
        # Entered for the actor's lifetime; Ray Data calls ``__del__`` when it ends the actor gracefully
        # (ActorPoolMapOperator drops the UDF), and a killed actor's process takes its resources along.
        self._backend = open_backend(config, artifact, backend).__enter__()
        self._preparer = make_preparer(decoder, artifact, config)
        self._qc = QcStage(artifact.manifest)

    def __del__(self) -> None:
        if hasattr(self, "_preparer"):  # absent when __init__ failed part-way
            self._preparer.close()
        if hasattr(self, "_backend"):
            self._backend.__exit__(None, None, None)

    def __call__(self, batch: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        todo: list[EncodedImage] = []
        skipped: list[EncodedImage] = []
        committed = _committed_rows(batch)
        for i, index in enumerate(np.asarray(batch["index"]).tolist()):
            problem = str(batch["problem"][i])
            item = DiscoveredFile(Path(str(batch["path"][i])), str(batch["relpath"][i]), problem or None)
            image = read_encoded(int(index), item)
            if plan(committed, image.relpath, image.sha256) == "skip":
                image.status, image.data = ImageStatus.SUPERSEDED, None  # marks "no result here"; the driver drops it
                skipped.append(image)
            else:
                todo.append(image)
        parts = []
        if todo:
            prepared = self._preparer.prepare(todo)
            n_ok = len(prepared.ok_positions)
            output = self._backend.infer(prepared.inputs) if n_ok else InferenceOutput.empty(len(CLASS_NAMES), 0)
            parts.append((rows_for(prepared, output, self._qc(prepared, output)), False))
        if skipped:
            empty = PreparedBatch(skipped, None, np.full(len(skipped), np.nan, dtype=np.float32))
            # qc fill values, so that every part has the same Ray columns (the driver drops skipped rows)
            parts.append((rows_for(empty, InferenceOutput.empty(len(CLASS_NAMES), 0), empty_qc(len(skipped))), True))
        columns = [rows_to_columns(rows) | {SKIPPED: np.full(len(rows), flag)} for rows, flag in parts]
        return {name: np.concatenate([c[name] for c in columns]) for name in columns[0]}


def _committed_rows(batch: Mapping[str, npt.NDArray[Any]]) -> dict[str, CommittedRow]:
    """The earlier run's rows of this batch's files, as ``plan`` takes them (row numbers do not matter here)."""
    from allbatch.results.writer import CommittedRow

    out: dict[str, CommittedRow] = {}
    for relpath, sha, status in zip(
        batch["relpath"].tolist(), batch["committed_sha256"].tolist(), batch["committed_status"].tolist(), strict=True
    ):
        if int(status) >= 0:
            out[str(relpath)] = CommittedRow(-1, str(sha), int(status))
    return out


def _probe(config: RunConfig) -> RemoteBackendInfo:
    """Run on a worker with the actors' resources: which backend and decoder ``auto`` resolves to there
    (the run plan's rules, ``plan.open_backend`` and ``plan.decoder_for``), after the start-up output check
    (``plan.open_checked_backend``), so that a model whose outputs are not results is refused before the driver
    opens the results file."""
    from allbatch.model.manifest import load_model_artifact

    with open_checked_backend(config, load_model_artifact(config.model)) as backend:
        decoder = decoder_for(config.decoder, backend.name)
        return RemoteBackendInfo(backend.name, backend.device, backend.describe(), decoder)


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # the extra, not only ray core
    except ImportError:
        raise BackendUnavailableError(INSTALL_HINT) from None
    return ray


def _remote_error(exc: BaseException) -> BaseException:
    """An AllbatchError raised on a worker, as itself (one line at the CLI); anything else unchanged."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, AllbatchError):
        return cause
    return exc


def _items(files: list[DiscoveredFile], committed: Mapping[str, CommittedRow], rows_per_block: int) -> list[Any]:
    """The discovered files as Arrow tables of ``rows_per_block`` items (Ray Data's input blocks)."""
    import pyarrow as pa

    tables = []
    for start in range(0, len(files), rows_per_block):
        chunk = files[start : start + rows_per_block]
        rows = [committed.get(item.relpath) for item in chunk]
        tables.append(
            pa.table(
                {
                    "index": pa.array(range(start, start + len(chunk)), type=pa.int64()),
                    "path": [str(item.path) for item in chunk],
                    "relpath": [item.relpath for item in chunk],
                    "problem": [item.problem or "" for item in chunk],
                    "committed_sha256": ["" if row is None else row.sha256 for row in rows],
                    "committed_status": pa.array([-1 if row is None else row.status for row in rows], type=pa.int64()),
                }
            )
        )
    return tables


def run_ray(
    config: RunConfig, actors: int | None = None, progress: ProgressCallback | None = None, stop: threading.Event | None = None
) -> RunSummary:
    """Run ``config`` on the Ray cluster (module docstring); ``actors`` defaults to one per GPU of the
    cluster, or one per CPU when it has none. ``stop`` (set on SIGINT/SIGTERM by the CLI): stop taking
    rows, commit what came back, keep the file resumable and mark the summary interrupted."""
    if config.shard is not None:
        raise UserInputError("--shard cannot be combined with --executor ray (the driver writes every row)")
    if actors is not None and actors < 1:
        raise UserInputError(f"--workers must be at least 1, got {actors}")
    # Absolute paths: the actors do not run in this process's working directory (see ``isolated_working_dir``).
    model = None if config.model is None else Path(config.model).resolve()
    config = dataclasses.replace(config, source=Path(config.source).absolute(), model=model)
    with plan_run(config) as plan:  # before the cluster starts: options, files, output and its lock, model fit
        ray = _import_ray()
        started_ray = not ray.is_initialized()
        with tempfile.TemporaryDirectory(prefix="allbatch-ray-") as empty:
            if started_ray:  # joins RAY_ADDRESS when set, else starts a local cluster
                ray.init(logging_level=logging.WARNING, runtime_env=isolated_working_dir(Path(empty)))
            try:
                return _run_planned(ray, plan, actors, progress, stop)
            finally:
                if started_ray:
                    ray.shutdown()


def isolated_working_dir(empty: Path) -> dict[str, str]:
    """The Ray runtime environment of an allbatch job: an empty ``working_dir``.

    Without a ``working_dir``, ``ray.init`` puts the driver's current directory (and the folder of the
    script it runs) on every worker's ``sys.path``, ahead of the installed packages (ray/_private/worker.py,
    ``connect``: ``JobConfig._py_driver_sys_path``; the workers insert it at position 0). Started from inside
    the input folder, a worker would then import a ``simplejpeg.py`` found there, and a folder named ``allbatch``
    in the current directory would hide the installed package. With a ``working_dir`` set, Ray adds neither; the
    workers run in (and import from) the uploaded copy of ``empty`` instead, where there is nothing to import.
    """
    return {"working_dir": str(empty)}


def _run_planned(
    ray: Any, plan: RunPlan, actors: int | None, progress: ProgressCallback | None, stop: threading.Event | None
) -> RunSummary:
    config, files = plan.config, plan.files
    gpus = int(ray.cluster_resources().get("GPU", 0))
    n_actors = actors or max(1, gpus or int(ray.cluster_resources().get("CPU", 1)))
    resources = {"num_gpus": 1} if gpus else {"num_cpus": 1}
    try:
        info = ray.get(ray.remote(**resources)(_probe).remote(config))
    except ray.exceptions.RayTaskError as exc:
        raise _remote_error(exc) from None
    executor = {"name": "ray", "actors": n_actors, "gpus_per_actor": resources.get("num_gpus", 0), "ray": ray.__version__}
    provenance = plan.provenance(info, info.decoder, executor)
    log.info("%d images found under %s; %d Ray actors, backend %s on %s", len(files), config.source, n_actors, info.name, info.device)
    started = time.perf_counter()
    tally = Tally(len(files))
    with plan.open_writer(provenance) as writer:
        committed = writer.committed()
        interrupted, superseded = _drive(ray, config, info, files, committed, writer, n_actors, resources, tally, progress, stop)
        if superseded:
            writer.supersede(superseded)
        writer.close(compact=not interrupted)
    tally.finish(config.output)
    summary = tally.summary(config.output, info.name, info.decoder, f"ray: {n_actors} x {info.device}", time.perf_counter() - started)
    summary.interrupted = interrupted
    summary.startup_seconds = started - plan.started
    if not interrupted:
        summary.groups = plan.write_groups()
    return summary


def _drive(
    ray: Any,
    config: RunConfig,
    info: RemoteBackendInfo,
    files: list[DiscoveredFile],
    committed: Mapping[str, CommittedRow],
    writer: Any,
    n_actors: int,
    resources: dict[str, int],
    tally: Tally,
    progress: ProgressCallback | None,
    stop: threading.Event | None = None,
) -> tuple[bool, list[int]]:
    """Stream the dataset through the actors and append each returned row once; returns whether a stop
    interrupted it and the rows the new ones supersede. Raises AllbatchError when an index never came back
    (not expected from Ray Data)."""
    total = len(files)
    interrupted = False
    if total == 0:
        return interrupted, []
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI shows one bar for the run
    rows_per_block = max(1, min(config.batch_size, math.ceil(total / (BLOCKS_PER_ACTOR * n_actors))))
    dataset = ray.data.from_arrow(_items(files, committed, rows_per_block)).map_batches(
        RowsActor,
        batch_size=config.batch_size,
        batch_format="numpy",
        fn_constructor_kwargs={"config": config, "backend": info.name, "decoder": info.decoder},
        compute=ray.data.ActorPoolStrategy(size=n_actors),
        **resources,
    )
    seen = np.zeros(total, dtype=np.bool_)
    superseded: list[int] = []
    duplicates = 0
    pending: list[dict[str, npt.NDArray[Any]]] = []
    pending_rows = 0
    began = time.perf_counter()

    def report() -> None:
        if progress is not None:
            handled = int(seen.sum())
            progress(
                RunProgress(processed=handled - tally.skipped, skipped=tally.skipped, total=total, seconds=time.perf_counter() - began)
            )

    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            index = np.asarray(batch["index"], dtype=np.int64)
            fresh = ~seen[index]
            duplicates += int((~fresh).sum())
            seen[index] = True
            skipped = np.asarray(batch[SKIPPED], dtype=np.bool_) & fresh
            for relpath in np.asarray(batch["paths"])[skipped].tolist():
                row = committed[str(relpath)]
                tally.add_skipped(str(relpath), int(row.status), row.row)
            keep = np.flatnonzero(fresh & ~skipped)
            pending.append({name: np.asarray(column)[keep] for name, column in batch.items()})
            pending_rows += len(keep)
            if pending_rows >= WRITE_ROWS:
                superseded.extend(_commit(pending, writer, committed, tally))
                pending, pending_rows = [], 0
            report()
            if stop is not None and stop.is_set():
                interrupted = True
                break
    except ray.exceptions.RayError as exc:
        if pending_rows:  # what came back is kept; a resume does the rest
            superseded.extend(_commit(pending, writer, committed, tally))
        raise _remote_error(exc) from None
    if pending_rows:
        superseded.extend(_commit(pending, writer, committed, tally))
    if duplicates:
        log.info("dropped %d rows that a retried Ray task returned again", duplicates)
    if not seen.all() and not interrupted:
        missing = np.flatnonzero(~seen)
        raise AllbatchError(
            f"Ray returned no row for {len(missing)} files (first: {files[int(missing[0])].relpath}); run again with --resume"
        )
    return interrupted, superseded


def _commit(pending: list[dict[str, npt.NDArray[Any]]], writer: Any, committed: Mapping[str, CommittedRow], tally: Tally) -> list[int]:
    """Append the pending rows as one commit; returns the committed rows they supersede."""
    columns = {name: np.concatenate([part[name] for part in pending]) for name in pending[0]}
    rows = rows_from_columns(columns, np.arange(len(columns[SKIPPED]), dtype=np.int64))
    writer.append(rows)
    tally.add_rows(rows)
    return [committed[path].row for path in rows.paths if path in committed]
