"""``run_bench``: the real pipeline measured in paired, alternating rounds, against the naive per-image loop.

Every round runs, one after another on the same images: for each batch size the serial pipeline with the
stage timer (``pipeline.run`` with ``serial=True``), the threaded pipeline (``pipeline.run``, the real job),
the backend alone on a resident batch (infer-only); then the naive baseline once. Ratios are taken within a
round and their median reported, so a load that comes and goes on a shared machine hits both sides of a ratio.
Backend and decoder are chosen by ``pipeline.run`` itself (``backends.select``), exactly as ``allbatch run``.

Start-up is paid once (issue 22): the backend is opened once per batch size and every round's runs use it, and
the DALI pipeline is built and warmed once per process (``prepare.dali.pipeline_cache``); each run's clock
starts when both are ready. The report gives start-up seconds (``startup``) apart from the steady rate.
On a GPU the default image count is ``GPU_BENCH_IMAGES`` (the folder's files repeated): a few batches would
measure mostly the ramp-up of the first one.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from allbatch.backends.base import Backend
from allbatch.bench.baseline import measure_naive
from allbatch.bench.images import (
    ImageSource,
    cap_batch_sizes,
    default_source,
    describe_images,
    resolve_source,
    select_images,
    stage_images,
)
from allbatch.bench.load_monitor import LoadMonitor
from allbatch.bench.timing import device_synchronizer, peak_rss_mib, summarise
from allbatch.core.errors import AllbatchError, UserInputError
from allbatch.core.stage_timer import STAGES, StageTimer
from allbatch.environment.machine import collect_environment, machine_load
from allbatch.input.discover import DiscoveredFile, discover
from allbatch.model.manifest import ModelArtifact, load_model_artifact
from allbatch.run.config import GpuTuning, RunConfig
from allbatch.run.engine import run
from allbatch.run.tally import RunSummary

log = logging.getLogger("allbatch.bench")

SCHEMA = "allbatch-bench/3"
DEFAULT_LIMIT = 16
"""Images benchmarked when no limit is given (fewer when the folder holds fewer; an explicit limit may repeat them)."""
WARMUP_BASELINE_IMAGES = 2
"""Images of the naive loop's untimed warm-up (torch's first calls); the timed rounds use ``baseline_limit``."""

__all__ = ["BenchConfig", "BenchPlan", "BenchProgress", "default_source", "plan_bench", "run_bench", "select_images"]


@dataclass(frozen=True)
class BenchProgress:
    """Where a benchmark stands: ``step`` in words; ``done`` of ``total`` images through a network (every
    pipeline pass, infer-only call and baseline image of every round counts), so a bar moves evenly."""

    step: str
    done: int
    total: int


Progress = Callable[[BenchProgress], None]
GPU_BENCH_IMAGES = 4096
"""Images timed end to end by default when the backend runs on a GPU (issue 22: at least 4,096, the development
images repeated), so that start-up leaves the figure and the steady rate shows."""


@dataclass
class BenchConfig:
    """Everything ``allbatch bench`` needs; built by the CLI, usable from Python.

    ``source`` None means the development dataset where it is found, else the shipped demo images
    (``images.resolve_source``). ``limit`` caps the images (spread evenly over the sorted file list); None means
    ``DEFAULT_LIMIT`` or the whole folder if it holds fewer; a limit above the folder's size repeats its files (see
    ``select_images``). Batch sizes above the
    number of images are capped at it. ``baseline_limit`` times the naive loop on the first that many of them only
    (None: all): it runs one image at a time, many times slower than the pipeline.
    ``repeats`` is the number of paired rounds; ``warmup`` untimed rounds on one batch of the smallest size precede
    them. The defaults (the CLI's too) finish in about 2 minutes on a loaded 2-core CPU with the shipped model.
    """

    source: Path | None = None
    model: Path | None = None
    backend: str = "auto"
    decoder: str = "auto"
    precision: str = "fp16"
    batch_sizes: tuple[int, ...] = (8, 16)
    repeats: int = 2
    warmup: int = 1
    limit: int | None = None
    baseline: bool = True
    baseline_limit: int | None = 8
    decode_threads: int = 2
    argv: list[str] = field(default_factory=list)
    tuning: GpuTuning = field(default_factory=GpuTuning)
    """GPU-path switches for every run and the infer-only backend (``run.config.GpuTuning``)."""

    def validate(self) -> None:
        """Raises UserInputError for values no measurement can use."""
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise UserInputError(f"batch sizes must be positive integers, got {list(self.batch_sizes)}")
        if self.repeats < 1:
            raise UserInputError(f"--repeats must be at least 1, got {self.repeats}")
        if self.warmup < 0:
            raise UserInputError(f"--warmup must be 0 or more, got {self.warmup}")
        if self.limit is not None and self.limit < 1:
            raise UserInputError(f"--limit must be at least 1, got {self.limit}")
        if self.baseline_limit is not None and self.baseline_limit < 1:
            raise UserInputError(f"--baseline-limit must be at least 1, got {self.baseline_limit}")
        if self.decode_threads < 1:
            raise UserInputError(f"--decode-threads must be at least 1, got {self.decode_threads}")
        if self.tuning.prefetch_depth < 1:
            raise UserInputError(f"--prefetch-depth must be at least 1, got {self.tuning.prefetch_depth}")


def model_flops(artifact: ModelArtifact) -> float | None:
    """Floating-point operations of one image through the network (2 per multiply-add; convolutions and
    matrix products, torch's FlopCounterMode on the manifest's architecture). None without torch."""
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    from allbatch.model.config import ModelConfig
    from allbatch.model.network import TwoChannelNet

    net = TwoChannelNet(ModelConfig.from_dict(artifact.manifest.architecture)).eval()
    size = artifact.manifest.prep.size
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros((1, 2, 3, size, size)))
    return float(counter.get_total_flops())


def describe_model(artifact: ModelArtifact) -> dict[str, Any]:
    """Name, path, sha256, architecture, whether it is the full DenseNet201, and its GFLOP per image."""
    from allbatch.model.config import DENSENET201

    manifest = artifact.manifest
    flops = model_flops(artifact)
    return {
        "path": str(artifact.onnx_path),
        "name": manifest.name,
        "sha256": artifact.sha256,
        "size_mib": round(artifact.onnx_path.stat().st_size / (1 << 20), 1),
        "architecture": manifest.architecture,
        "full_densenet201": manifest.architecture == DENSENET201.to_dict(),
        "gflop_per_image": None if flops is None else round(flops / 1e9, 3),
    }


@dataclass
class _Series:
    """The timed rounds of one batch size."""

    serial_stages: list[dict[str, Any]] = field(default_factory=list)
    serial_seconds: list[float] = field(default_factory=list)
    end_to_end_seconds: list[float] = field(default_factory=list)
    infer_only_seconds: list[float] = field(default_factory=list)
    startup_seconds: list[float] = field(default_factory=list)
    """Start-up of every run (serial, threaded, per round), warm-up rounds included: the first run of the process
    pays the DALI pipeline's build, the others borrow it."""
    summary: RunSummary | None = None


def _run_config(config: BenchConfig, source: Path, output: Path, batch_size: int, serial: bool) -> RunConfig:
    return RunConfig(
        source=source,
        output=output,
        model=config.model,
        backend=config.backend,
        decoder=config.decoder,
        precision=config.precision,
        batch_size=batch_size,
        infer_chunk_seconds=None,  # whole batches: the sweep measures the batch size it names
        mode="overwrite",
        decode_threads=config.decode_threads,
        argv=["allbatch", "bench", f"--batch-size={batch_size}"],
        serial=serial,
        tuning=config.tuning,
    )


def _resident_batch(folder: Path, artifact: ModelArtifact, batch_size: int, backend: Backend) -> Any:
    """A real (batch_size, 2, 3, S, S) float32 batch where the backend computes (host, or CUDA for GPU backends)."""
    from allbatch.backends.select import HOST_BACKENDS
    from allbatch.input.read import read_encoded
    from allbatch.prepare.cpu import PillowPreparer

    manifest = artifact.manifest
    files = discover(folder)[:batch_size]
    preparer = PillowPreparer(manifest.prep, manifest.seg, threads=2)
    try:
        prepared = preparer.prepare([read_encoded(i, item) for i, item in enumerate(files)])
    finally:
        preparer.close()
    if prepared.inputs.shape[0] == 0:
        raise UserInputError(f"none of the first {len(files)} images under {folder} could be decoded")
    # Fewer images than the batch: repeat them (the content does not change the arithmetic).
    host = np.ascontiguousarray(np.resize(prepared.inputs, (batch_size, *prepared.inputs.shape[1:])))
    if backend.name in HOST_BACKENDS:
        return host
    import torch

    return torch.from_numpy(host).to("cuda")


@dataclass(frozen=True)
class BenchPlan:
    """What a benchmark will measure, settled before any model loads (and printed by the CLI).

    ``files``: the benchmark images (``limit`` of the ``found`` usable ones, spread, or repeated);
    ``batch_sizes``: the requested ones capped at ``len(files)``; ``warmup_images``: one batch of the smallest
    size; ``baseline_images``: the naive loop's images per timed round (0 without it)."""

    source: ImageSource
    found: int
    files: list[DiscoveredFile]
    requested_batch_sizes: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    warmup_images: int
    baseline_images: int
    repeats: int
    warmup: int

    def calls(self, size: int) -> int:
        """Infer-only calls per timed round at batch ``size``: as many batches as the pipeline runs."""
        return -(-len(self.files) // size)

    def total_work(self) -> int:
        """Images through a network over the whole benchmark (``BenchProgress.total``)."""
        n, warm = len(self.files), self.warmup_images
        warm_round = sum(warm + size for size in self.batch_sizes) + (min(WARMUP_BASELINE_IMAGES, n) if self.baseline_images else 0)
        timed_round = sum(2 * n + self.calls(size) * size for size in self.batch_sizes) + self.baseline_images
        return self.warmup * warm_round + self.repeats * timed_round

    def describe(self) -> list[str]:
        """What will run, in words: the images and where they come from, the batch sizes (and any cap), the rounds."""
        n = len(self.files)
        picked = f"all {n}" if n == self.found else f"{n} of {self.found}" + (" (repeated)" if n > self.found else ", spread")
        lines = [f"images: {picked} from {self.source.origin}"]
        sizes = ", ".join(map(str, self.batch_sizes))
        if self.batch_sizes != self.requested_batch_sizes:
            requested = ", ".join(map(str, self.requested_batch_sizes))
            sizes += f" (asked {requested}; capped at the {n} images: a larger batch would only take memory)"
        lines.append(f"batch sizes: {sizes}")
        baseline = f"naive per-image loop on {self.baseline_images} images" if self.baseline_images else "no naive loop"
        lines.append(
            f"rounds: {self.warmup} warm-up on {self.warmup_images} images, {self.repeats} timed; each: serial pipeline, "
            f"pipeline, infer-only per batch size; {baseline}"
        )
        return lines


def default_limit(backend: str, found: int) -> int:
    """Images benchmarked when ``--limit`` is not given: ``GPU_BENCH_IMAGES`` when ``backend`` (resolved as a run
    would) runs on a GPU, else ``DEFAULT_LIMIT`` or all of a smaller folder (a 2-core CPU finishes in minutes)."""
    from allbatch.backends.select import HOST_BACKENDS, backend_status, choose_backend

    try:
        chosen, _ = choose_backend(backend, backend_status)
    except AllbatchError:  # the backend is refused later, with its own message
        chosen = backend
    return GPU_BENCH_IMAGES if chosen not in HOST_BACKENDS else min(DEFAULT_LIMIT, found)


def plan_bench(config: BenchConfig) -> BenchPlan:
    """Validate ``config``, find and pick the images, cap the batch sizes: no model is loaded.

    Raises:
        UserInputError: bad options, no readable images.
    """
    config.validate()
    source = resolve_source(config.source)
    discovered = discover(source.path)
    found = sum(1 for item in discovered if item.problem is None)
    files = select_images(discovered, config.limit if config.limit is not None else default_limit(config.backend, found))
    if not files:
        raise UserInputError(f"no readable images under {source.path}")
    sizes = cap_batch_sizes(config.batch_sizes, len(files))
    baseline_images = min(config.baseline_limit or len(files), len(files)) if config.baseline else 0
    return BenchPlan(
        source=source,
        found=found,
        files=files,
        requested_batch_sizes=config.batch_sizes,
        batch_sizes=sizes,
        warmup_images=min(sizes),
        baseline_images=baseline_images,
        repeats=config.repeats,
        warmup=config.warmup,
    )


class _WorkCounter:
    """Turns the steps of ``run_bench`` into ``BenchProgress`` reports (images through a network so far)."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total = total
        self.done = 0
        self.progress = progress
        self.step = ""

    def start(self, step: str) -> None:
        self.step = step
        log.debug("bench: %s", step)
        self._report(self.done)

    def add(self, images: int) -> None:
        self.done += images
        self._report(self.done)

    def run_callback(self) -> Any:
        """A ``RunProgress`` callback for one pipeline run: moves the bar as its chunks commit."""
        base = self.done
        return lambda p: self._report(base + p.handled)

    def _report(self, done: int) -> None:
        if self.progress is not None:
            self.progress(BenchProgress(self.step, min(done, self.total), self.total))


def run_bench(config: BenchConfig, progress: Progress | None = None, plan: BenchPlan | None = None) -> dict[str, Any]:
    """Run every measurement of ``config`` (``plan``: from ``plan_bench``, made here when None) and return the
    report document (JSON-serialisable). ``progress`` gets a ``BenchProgress`` as the work advances.

    Raises:
        AllbatchError: bad options, no images, unusable backend/decoder, model that does not verify.
    """
    from allbatch.backends.select import HOST_BACKENDS, create_backend
    from allbatch.prepare.dali import pipeline_cache

    plan = plan or plan_bench(config)
    files, sizes = plan.files, plan.batch_sizes
    builds_before = pipeline_cache.stats()
    artifact = load_model_artifact(config.model)
    load_before = machine_load()
    started = datetime.now(UTC)
    series = {size: _Series() for size in sizes}
    baseline_seconds: list[float] = []
    baseline_result: dict[str, Any] | None = None
    work = _WorkCounter(plan.total_work(), progress)
    with tempfile.TemporaryDirectory(prefix="allbatch-bench-") as tmp, LoadMonitor() as monitor, ExitStack() as backends:
        images = Path(tmp) / "images"
        stage_images(files, images)
        warm = Path(tmp) / "warmup"
        stage_images(files[: plan.warmup_images], warm)
        warm_baseline = Path(tmp) / "warmup-baseline"
        stage_images(files[:WARMUP_BASELINE_IMAGES], warm_baseline)
        baseline_folder = images
        if plan.baseline_images < len(files):
            baseline_folder = Path(tmp) / "baseline"
            stage_images(files[: plan.baseline_images], baseline_folder)
        output = Path(tmp) / "results.h5"
        # Infer-only: the backend ``run`` would choose, built by the same function, kept open across rounds.
        resolved: dict[int, tuple[Backend, Any]] = {}
        for size in sizes:
            backend = backends.enter_context(
                create_backend(
                    config.backend,
                    artifact,
                    max_batch=size,
                    precision=config.precision,
                    cuda_graphs=config.tuning.cuda_graphs,
                    torch_compile=config.tuning.torch_compile,
                )
            )
            resolved[size] = (backend, _resident_batch(images, artifact, size, backend))
        any_backend = resolved[sizes[0]][0]
        on_host = any_backend.name in HOST_BACKENDS
        sync = device_synchronizer(not on_host)
        images_info = {
            **describe_images(images),
            "distinct_files": len({item.path for item in files}),
            "origin": plan.source.origin,
            "found_in_source": plan.found,
        }
        for round_index in range(config.warmup + config.repeats):
            timed_round = round_index >= config.warmup
            folder = images if timed_round else warm
            label = f"round {round_index - config.warmup + 1}/{config.repeats}" if timed_round else "warm-up"
            for size in sizes:
                timer = StageTimer(None if on_host else sync)
                backend, batch = resolved[size]  # the runs use the backend opened once (start-up paid once)
                serial: RunSummary | None = None
                if timed_round:  # the warm-up needs no stage timing: the threaded run and infer-only warm everything
                    work.start(f"{label}, batch {size}: serial pipeline with stage timer")
                    serial = run(_run_config(config, folder, output, size, serial=True), work.run_callback(), timer=timer, backend=backend)
                    work.add(len(files))
                work.start(f"{label}, batch {size}: pipeline (threads)")
                threaded = run(_run_config(config, folder, output, size, serial=False), work.run_callback(), backend=backend)
                work.add(len(files) if timed_round else plan.warmup_images)
                series[size].startup_seconds.extend([s.startup_seconds for s in (serial, threaded) if s is not None])
                work.start(f"{label}, batch {size}: infer-only")
                sync()
                tic = time.perf_counter()
                for _ in range(plan.calls(size) if timed_round else 1):
                    backend.infer(batch)
                    work.add(size)
                sync()
                infer_seconds = time.perf_counter() - tic
                if serial is not None:
                    entry = series[size]
                    entry.serial_stages.append(timer.to_dict())
                    entry.serial_seconds.append(serial.seconds)
                    entry.end_to_end_seconds.append(threaded.seconds)
                    entry.infer_only_seconds.append(infer_seconds)
                    entry.summary = threaded
            if plan.baseline_images:
                work.start(f"{label}: naive per-image loop")
                result = measure_naive(baseline_folder if timed_round else warm_baseline, artifact, "cpu" if on_host else "cuda")
                work.add(result["images"])
                if timed_round:
                    baseline_seconds.append(result["seconds"])
                    baseline_result = result
        details = any_backend.describe()
    load = {"before": load_before, "during_run": monitor.report(), "after": machine_load()}
    calls = {size: plan.calls(size) for size in sizes}
    builds_after = pipeline_cache.stats()
    pipelines = {
        "built": builds_after.builds - builds_before.builds,
        "reused": builds_after.reuses - builds_before.reuses,
        "build_seconds": round(builds_after.build_seconds - builds_before.build_seconds, 3),
    }
    return _report(config, plan, artifact, images_n=len(files), images_info=images_info, series=series, calls=calls,
                   baseline_n=plan.baseline_images, baseline_seconds=baseline_seconds, baseline=baseline_result,
                   backend_details=details, load=load, started=started, pipelines=pipelines)  # fmt: skip


def _rates(images: int, seconds: list[float]) -> list[float]:
    return [images / s for s in seconds if s > 0]


def _median(values: list[float]) -> float | None:
    return round(float(np.median(values)), 4) if values else None


def _report(
    config: BenchConfig,
    plan: BenchPlan,
    artifact: ModelArtifact,
    *,
    images_n: int,
    images_info: dict[str, Any],
    series: dict[int, _Series],
    calls: dict[int, int],
    baseline_n: int,
    baseline_seconds: list[float],
    baseline: dict[str, Any] | None,
    backend_details: dict[str, Any],
    load: dict[str, Any],
    started: datetime,
    pipelines: dict[str, Any] | None = None,
) -> dict[str, Any]:
    environment = collect_environment(config.argv)
    model = describe_model(artifact)
    gflop = model["gflop_per_image"]
    peak = environment["cpu"]["peak_gflops"]
    baseline_rates = _rates(baseline_n, baseline_seconds)
    per_size: dict[str, Any] = {}
    for size, entry in series.items():
        assert entry.summary is not None  # repeats >= 1
        e2e = _rates(images_n, entry.end_to_end_seconds)
        serial = _rates(images_n, entry.serial_seconds)
        infer = _rates(calls[size] * size, entry.infer_only_seconds)
        stage_seconds = {stage: [r[stage]["seconds"] for r in entry.serial_stages] for stage in STAGES}
        total = sum(float(np.median(values)) for values in stage_seconds.values())
        stages = {
            stage: {
                "seconds": summarise(values),
                "ms_per_image": round(1000.0 * float(np.median(values)) / images_n, 3),
                "share": round(float(np.median(values)) / total, 4) if total > 0 else 0.0,
            }
            for stage, values in stage_seconds.items()
        }
        achieved = None if gflop is None or not infer else round(gflop * float(np.median(infer)), 1)
        per_size[str(size)] = {
            "end_to_end": {"images_per_s": summarise(e2e), "summary": entry.summary.to_dict()},
            "serial": {"images_per_s": summarise(serial), "stages": stages},
            "startup": {
                "first_run_seconds": round(entry.startup_seconds[0], 3),
                "timed_runs_seconds": summarise(entry.startup_seconds[config.warmup :]),  # a warm-up round runs the threaded pipeline only
            },
            "infer_only": {"images_per_s": summarise(infer), "calls_per_round": calls[size], "gflop_per_s": achieved},
            "ratios": {
                "end_to_end_vs_infer_only": _median([a / b for a, b in zip(e2e, infer, strict=True)]),
                "end_to_end_vs_baseline": _median([a / b for a, b in zip(e2e, baseline_rates, strict=True)]) if baseline_rates else None,
                "serial_vs_end_to_end": _median([a / b for a, b in zip(serial, e2e, strict=True)]),
            },
        }
    best = max(per_size, key=lambda size: float(per_size[size]["end_to_end"]["images_per_s"]["median"]))
    chosen = series[int(best)].summary
    assert chosen is not None  # repeats >= 1
    baseline_doc = None
    if baseline is not None:
        rate = float(np.median(baseline_rates))
        baseline_doc = {
            "images": baseline_n,
            "images_per_s": summarise(baseline_rates),
            "device": baseline["device"],
            "torch_threads": baseline["torch_threads"],
            "precision": "fp32",
            "gflop_per_s": None if gflop is None else round(gflop * rate, 1),
        }
    return {
        "schema": SCHEMA,
        "created_utc": started.isoformat(timespec="seconds"),
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment,
        "machine_load": load,
        "config": {
            "source": str(plan.source.path),
            "limit": config.limit,
            "images_timed": images_n,
            "default_limit": len(plan.files) if config.limit is None else None,
            "tuning": config.tuning.to_dict(),
            "baseline_limit": config.baseline_limit,
            "batch_sizes": list(plan.batch_sizes),
            "requested_batch_sizes": list(plan.requested_batch_sizes),
            "rounds": config.repeats,
            "warmup_rounds": config.warmup,
            "requested": {"backend": config.backend, "decoder": config.decoder, "precision": config.precision},
            "decode_threads": config.decode_threads,
        },
        "pipeline": {
            "backend": chosen.backend,
            "decoder": chosen.decoder,
            "device": chosen.device,
            "compute_precision": backend_details.get("compute_precision", backend_details.get("precision")),
            "backend_details": backend_details,
        },
        "model": model,
        "input": images_info,
        "method": {
            "rounds": "paired and alternating: each round runs, per batch size, the serial pipeline, the threaded "
            "pipeline and infer-only, then the baseline; ratios are taken within a round, the median over rounds",
            "end_to_end": "allbatch.run.engine.run (producer, backend and writer threads) into a temporary results.h5; "
            "the pipeline's own clock (every image, from the loaded model and the warmed decoder to the closed file): "
            "the steady-state rate; start-up is reported apart (startup, dali_pipelines)",
            "startup": "RunSummary.startup_seconds of the threaded runs: planning, the backend (opened once per batch size "
            "and shared by every run) and the decoder; the first run of the process also builds and warms the DALI pipeline",
            "serial": "allbatch.run.engine.run with serial=True and a StageTimer: read, prepare (decode, segment, "
            "assemble), infer, qc (quality-control measures and flags), write one after another in one thread; "
            "share = stage / sum of stages",
            "infer_only": "the backend run would choose (backends.select.create_backend) on one real batch already "
            "resident where it computes, ceil(n / batch) calls per round",
            "baseline": "per image: PIL load, OpenCV HSV, one eager torch fp32 forward, one HDF5 row write + flush",
            "gflop_per_s": "model gflop_per_image x images/s; compare with environment.cpu.peak_gflops",
        },
        "batch_sizes": per_size,
        "dali_pipelines": pipelines,
        "baseline": baseline_doc,
        "summary": {
            "best_batch_size": int(best),
            "end_to_end_images_per_s": per_size[best]["end_to_end"]["images_per_s"]["median"],
            "startup_seconds_first_run": per_size[best]["startup"]["first_run_seconds"],
            "startup_seconds_timed_runs": per_size[best]["startup"]["timed_runs_seconds"]["median"],
            "infer_only_images_per_s": per_size[best]["infer_only"]["images_per_s"]["median"],
            "baseline_images_per_s": None if baseline_doc is None else baseline_doc["images_per_s"]["median"],
            "end_to_end_vs_infer_only": per_size[best]["ratios"]["end_to_end_vs_infer_only"],
            "end_to_end_vs_baseline": per_size[best]["ratios"]["end_to_end_vs_baseline"],
            "infer_only_gflop_per_s": per_size[best]["infer_only"]["gflop_per_s"],
            "cpu_peak_gflop_per_s": peak,
            "peak_rss_mib": round(peak_rss_mib(), 1),
        },
    }
