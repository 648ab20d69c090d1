"""The run plan: everything a run decides before the first image, written once for every executor.

``plan_run`` does, in this order (cheap refusals first, each one line): the options, discovery and the
shard, the output preflight and its lock (held until the run ends, the folder table included), the model
artifact and whether it fits allbatch, the compatibility key a resume must match. The plan then opens the
backend (precision included), chooses the decoder for it, builds the preparer, writes the provenance, opens
the results writer under its lock and, at the end, writes the folder table (``/groups``) under the same
lock. The in-process engine, the local workers and Ray all go through it, so they cannot drift apart.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from allbatch.core.atomic_file import remove_stale
from allbatch.core.errors import UserInputError
from allbatch.core.pathtext import fs_to_text
from allbatch.input.discover import IMAGE_EXTENSIONS, DiscoveredFile, discover
from allbatch.input.shard import DiscoveryRecord, select
from allbatch.model.fit import check_model_fits
from allbatch.model.manifest import ModelArtifact, load_model_artifact
from allbatch.qc.stats import manifest_json_for_provenance
from allbatch.results.lock import OutputLock
from allbatch.results.preflight import check_output
from allbatch.run.config import RunConfig

if TYPE_CHECKING:
    from allbatch.backends.base import Backend
    from allbatch.core.records import Preparer
    from allbatch.results.writer import ResultsWriter
    from allbatch.summarize.groups import GroupTable

log = logging.getLogger("allbatch.run.plan")

MAX_AUTO_DECODE_THREADS = 16
"""More decode threads than this bring nothing for one GPU's (or one process's) batches."""


class BackendInfo(Protocol):
    """What the provenance needs from a backend: a ``Backend``, or a description of one running elsewhere (Ray)."""

    name: str
    device: str

    def describe(self) -> dict[str, Any]: ...


def auto_decode_threads() -> int:
    """One decode thread per usable core, at most ``MAX_AUTO_DECODE_THREADS`` (2 on the 2-core development
    machine, 16 on a 16-core GPU machine: DALI's CPU stage and the mixed decoder's host part use them)."""
    from allbatch.environment.cpu_features import cpu_features

    return min(cpu_features().usable_cores, MAX_AUTO_DECODE_THREADS)


def compat_key(artifact: ModelArtifact) -> dict[str, str]:
    """What must match for a resume to append to an existing results file."""
    manifest = artifact.manifest
    return {
        "model_sha256": artifact.sha256,
        "preprocessing": json.dumps(manifest.preprocessing, sort_keys=True),
        "segmentation": json.dumps(manifest.segmentation, sort_keys=True),
    }


def shard_compat(record: DiscoveryRecord) -> dict[str, str]:
    """What a part file adds to ``compat_key``: its shard of one discovered list (empty for a whole run),
    so that a part resumes only as the same shard of the same list."""
    if record.shard is None:
        return {}
    return {"shard": json.dumps({"shard": record.shard, "total": record.total, "sha256": record.sha256}, sort_keys=True)}


def check_options(config: RunConfig) -> None:
    """Refuse options no executor can run, before anything is read."""
    if config.batch_size < 1:
        raise UserInputError(f"--batch-size must be at least 1, got {config.batch_size}")


@dataclass
class RunPlan:
    """One run's decisions; holds the output lock from ``plan_run`` until ``release`` (a context manager).

    ``files``: this run's part of the discovered list (all of it without a shard), ``record`` its
    discovery record; ``started``: ``time.perf_counter()`` when planning began (start-up is measured from it)."""

    config: RunConfig
    files: list[DiscoveredFile]
    record: DiscoveryRecord
    artifact: ModelArtifact
    compat: dict[str, str]
    lock: OutputLock
    started: float = field(default_factory=time.perf_counter)

    # ------------------------------------------------------------------ backend, decoder, preparer
    @contextmanager
    def open_backend(self) -> Iterator[Backend]:
        """The configured backend for this model, batch size and precision (``open_backend``), entered and
        checked (``open_checked_backend``): a model whose outputs are not results is refused here, before
        the results file is opened."""
        with open_checked_backend(self.config, self.artifact) as backend:
            yield backend

    def decoder_for(self, backend_name: str) -> str:
        """The decoder this run uses with ``backend_name`` (``decoder_for``)."""
        return decoder_for(self.config.decoder, backend_name)

    def make_preparer(self, decoder: str) -> Preparer:
        """The decode/segment/assemble stage for a resolved decoder name ("cpu", "dali", "dali-cpu")."""
        return make_preparer(decoder, self.artifact, self.config)

    # ------------------------------------------------------------------ provenance and writing
    def provenance(self, backend: BackendInfo, decoder: str, executor: dict[str, Any] | None = None) -> dict[str, Any]:
        """The root attributes of results.h5 for this run (``executor`` only where it is not one process)."""
        from allbatch.environment.machine import library_versions

        config, artifact = self.config, self.artifact
        manifest = artifact.manifest
        out: dict[str, Any] = {
            "argv": [fs_to_text(arg) for arg in config.argv],  # a non-UTF-8 path argument stored as its escaped text
            "input_root": fs_to_text(str(Path(config.source).resolve())),
            "run_started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": platform.node(),
            "backend": backend.name,
            "backend_details": backend.describe(),
            "device": backend.device,
            "decoder": decoder,
            "batch_size": config.batch_size,
            "symlinks": config.symlinks,
            "model_path": fs_to_text(str(artifact.onnx_path)),
            "model_sha256": artifact.sha256,
            "model_manifest": manifest_json_for_provenance(manifest),
            "preprocessing": manifest.preprocessing,
            "segmentation": manifest.segmentation,
            "library_versions": library_versions(),
            "discovery": self.record.to_dict(),
        }
        if executor is not None:
            out["executor"] = executor
        return out

    def open_writer(self, provenance: dict[str, Any]) -> ResultsWriter:
        """The results writer of this run's output, under the plan's lock."""
        from allbatch.results.writer import ResultsWriter

        config = self.config
        return ResultsWriter.open(
            config.output, mode=config.mode, provenance=provenance, compat=self.compat, expected_rows=len(self.files), lock=self.lock
        )

    def write_groups(self) -> GroupTable | None:
        """Per-folder verdicts of every live row of the finished output, stored as its ``/groups`` under the
        plan's lock; None when the run writes no folder table (``config.group_by`` None)."""
        if self.config.group_by is None:
            return None
        from allbatch.summarize.groups_h5 import store_groups

        return store_groups(self.config.output, self.config.group_by)

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def open_backend(config: RunConfig, artifact: ModelArtifact, name: str | None = None) -> Backend:
    """The backend ``name`` (default ``config.backend``) for ``artifact`` at ``config``'s batch size and
    precision, not yet entered. Every executor creates its backends here (Ray's actors and probe too)."""
    from allbatch.backends.select import create_backend

    tuning = config.tuning
    return create_backend(
        name or config.backend,
        artifact,
        max_batch=config.batch_size,
        precision=config.precision,
        cuda_graphs=tuning.cuda_graphs,
        torch_compile=tuning.torch_compile,
    )


@contextmanager
def open_checked_backend(config: RunConfig, artifact: ModelArtifact, name: str | None = None) -> Iterator[Backend]:
    """``open_backend`` entered, then the start-up output check (``backends.output_check.check_model_outputs``:
    the shipped images through the loaded runtime; ModelError, one line, when its outputs are not results).
    Every executor loads its first backend here (the engine, and Ray's probe) before anything is written."""
    from allbatch.backends.output_check import check_model_outputs

    with open_backend(config, artifact, name) as backend:
        check_model_outputs(backend, artifact)
        yield backend


def decoder_for(decoder: str, backend_name: str) -> str:
    """``--decoder`` resolved for the backend ``backend_name`` runs on, or refused when it cannot feed that
    backend (DALI on the GPU with a backend that takes host arrays, ``backends.select.HOST_BACKENDS``)."""
    from allbatch.backends.select import HOST_BACKENDS, resolve_decoder

    resolved = resolve_decoder(decoder, for_backend=backend_name)
    if resolved == "dali" and backend_name in HOST_BACKENDS:
        raise UserInputError(f"--decoder dali leaves images on the GPU, but {backend_name} runs on the host: use --decoder cpu or dali-cpu")
    return resolved


def make_preparer(decoder: str, artifact: ModelArtifact, config: RunConfig) -> Preparer:
    """The decode/segment/assemble stage for a resolved decoder name ("cpu", "dali", "dali-cpu"), ready to run:
    a DALI preparer has its pipeline built and warmed (or borrowed from an earlier run of this process,
    ``prepare.dali.pipeline_cache``) before this returns, so start-up stays off the run's clock."""
    manifest = artifact.manifest
    threads = config.decode_threads if config.decode_threads is not None else auto_decode_threads()
    if decoder == "cpu":
        from allbatch.prepare.cpu import PillowPreparer

        return PillowPreparer(manifest.prep, manifest.seg, threads=threads)
    from allbatch.prepare.dali.preparer import DaliPreparer

    preparer = DaliPreparer(
        manifest.prep,
        manifest.seg,
        device="gpu" if decoder == "dali" else "cpu",
        max_batch=config.batch_size,
        num_threads=threads,
        prefetch_depth=config.tuning.prefetch_depth,
        fancy_upsampling=config.tuning.fancy_upsampling,
    )
    preparer.ready()
    return preparer


def plan_run(config: RunConfig) -> RunPlan:
    """Plan ``config`` (module docstring): returns a plan holding the output lock; raises AllbatchError with
    one line when the run cannot start, before anything is written or any runtime loads."""
    started = time.perf_counter()
    check_options(config)
    files, record = select(discover(config.source, config.symlinks), config.shard)
    if not record.total:
        raise UserInputError(
            f"no images found under {config.source} (looked for {' '.join(sorted(IMAGE_EXTENSIONS))} in every subfolder); nothing written"
        )
    check_output(config.output, config.mode)
    lock = OutputLock(config.output)  # held until the run ends; the writer checks the mode again under it
    try:
        remove_stale(config.output)  # temporary copies of killed writers of this output (no live one: we hold its lock)
        artifact = load_model_artifact(config.model)
        check_model_fits(artifact)
    except BaseException:
        lock.release()
        raise
    return RunPlan(config, files, record, artifact, compat_key(artifact) | shard_compat(record), lock, started)
