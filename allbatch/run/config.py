"""What a run is asked to do (``RunConfig``) and how it reports where it stands (``RunProgress``).

Built by the CLI (or by a Python caller), read by the run plan and by every executor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from allbatch.input.discover import SymlinkPolicy
from allbatch.input.shard import Shard

WriteMode = Literal["new", "resume", "overwrite"]
INFER_CHUNK_SECONDS = 2.0
"""Longest an inference call should take where the device allows. A batch is inferred in chunks sized
from the measured speed; each chunk's rows are committed and reported before the next, so on a slow
device (a 2-core CPU runs the shipped model at ~8 img/s) progress, commits and a stop request come
every ~2 s instead of once per 64-image batch (8 s). Fast devices get whole batches."""


@dataclass(frozen=True)
class GpuTuning:
    """How the GPU path runs (issue 22). Each switch keeps the earlier behaviour selectable, so that one GPU
    lease measures both sides of every change in one process (``benchmarks/gpu_verify.py speed``).

    ``prefetch_depth``: DALI batches in flight ahead of the producer (1: each batch decoded while it waits).
    ``cuda_graphs``: the torch backend replays one captured CUDA graph per call (static shapes).
    ``torch_compile``: the torch backend's forward through ``torch.compile`` (compile time is start-up).
    ``fancy_upsampling``: DALI's ``jpeg_fancy_upsampling`` (the GPU upsamples JPEG chroma as the CPU path does).
    ``overlap_infer``: the consumer queues batch k+1 on the device before it writes the rows of batch k.
    """

    prefetch_depth: int = 2
    cuda_graphs: bool = True
    torch_compile: bool = False
    fancy_upsampling: bool = True
    overlap_infer: bool = True

    def to_dict(self) -> dict[str, int | bool]:
        return dict(self.__dict__)


@dataclass
class RunConfig:
    """Everything ``allbatch run`` needs; built by the CLI, usable from Python. The same for every executor."""

    source: Path
    output: Path
    model: Path | None = None
    backend: str = "auto"
    decoder: str = "auto"
    precision: str = "fp16"
    """``backends.select.PRECISIONS``: "fp16" is the device's reduced precision (checked against fp32 before use)."""
    batch_size: int = 64
    mode: WriteMode = "new"
    symlinks: SymlinkPolicy = "follow"
    decode_threads: int | None = None
    """Decode threads (Pillow pool or DALI's CPU threads); None: ``auto_decode_threads()``."""
    argv: list[str] = field(default_factory=list)
    infer_chunk_seconds: float | None = INFER_CHUNK_SECONDS
    """See INFER_CHUNK_SECONDS; None infers whole batches (the benchmark's batch-size sweep)."""
    shard: Shard | None = None
    """Process only this contiguous range of the discovered order (``allbatch merge`` joins the parts)."""
    serial: bool = False
    """Read, prepare, infer and write one after another in the calling thread (no producer or writer thread):
    the benchmark's stage breakdown, whose stage times add up to the run's wall time."""
    tuning: GpuTuning = field(default_factory=GpuTuning)
    """GPU-path switches (``GpuTuning``); the defaults are the measured best."""
    group_by: str | None = "parent"
    """Folder verdicts written as ``/groups`` at the end of a finished run ("parent" or a depth, see
    ``summarize.groups.parse_group_by``); None writes no folder table (a worker's part file)."""


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands, reported after each committed chunk.

    ``processed``: images run through the model by this run; ``skipped``: files an earlier run
    committed (not redone); ``total``: discovered files; ``seconds``: since the model was ready.
    The rate and the ETA use ``processed`` only, so a resumed run's skipped files do not inflate them.
    """

    processed: int
    skipped: int
    total: int
    seconds: float

    @property
    def handled(self) -> int:
        return self.processed + self.skipped

    @property
    def images_per_second(self) -> float | None:
        return self.processed / self.seconds if self.processed and self.seconds > 0 else None

    @property
    def eta_seconds(self) -> float | None:
        rate = self.images_per_second
        return (self.total - self.handled) / rate if rate else None


ProgressCallback = Callable[[RunProgress], None]
"""Called after each committed chunk of images."""
