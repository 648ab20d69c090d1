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
import shutil
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
from allbatch.bench.load_monitor import LoadMonitor
from allbatch.bench.timing import device_synchronizer, peak_rss_mib, summarise
from allbatch.core.errors import UserInputError
from allbatch.core.stage_timer import STAGES, StageTimer
from allbatch.environment.machine import REPO_ROOT, collect_environment, machine_load
from allbatch.input.discover import DiscoveredFile, discover
from allbatch.model.manifest import ModelArtifact, load_model_artifact
from allbatch.run.config import GpuTuning, RunConfig
from allbatch.run.engine import run
from allbatch.run.tally import RunSummary

log = logging.getLogger("allbatch.bench")

SCHEMA = "allbatch-bench/2"
DATASET_ORIGINAL = REPO_ROOT.parent / "shared" / "data" / "all-kaggle" / "Original"
DEMO_DIR = REPO_ROOT / "allbatch" / "demo"
Progress = Callable[[str], None]
GPU_BENCH_IMAGES = 4096
"""Images timed end to end by default when the backend runs on a GPU (issue 22: at least 4,096)."""


def default_limit(on_gpu: bool) -> int | None:
    """The image count ``allbatch bench`` times when ``--limit`` is not given: ``GPU_BENCH_IMAGES`` on a GPU,
    every image of the folder on the CPU."""
    return GPU_BENCH_IMAGES if on_gpu else None


@dataclass
class BenchConfig:
    """Everything ``allbatch bench`` needs; built by the CLI, usable from Python.

    ``source`` None means the dataset's Original folder when present, else the shipped demo images.
    ``limit`` caps the images (spread evenly over the sorted file list); None uses all of them; a limit above the
    folder's size repeats its files (see ``select_images``). ``baseline_limit`` times the naive loop on the first
    that many of them only (None: all): at GPU speeds the pipeline needs tens of thousands of images, which the
    naive loop would take many minutes to go through.
    ``repeats`` is the number of paired rounds; ``warmup`` untimed rounds on the first two batches precede them.
    """

    source: Path | None = None
    model: Path | None = None
    backend: str = "auto"
    decoder: str = "auto"
    precision: str = "fp16"
    batch_sizes: tuple[int, ...] = (8, 32, 128)
    repeats: int = 3
    warmup: int = 1
    limit: int | None = None
    baseline: bool = True
    baseline_limit: int | None = None
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


def default_source() -> Path:
    """The dataset's Original folder when it is beside the checkout, else the shipped demo images."""
    return DATASET_ORIGINAL if DATASET_ORIGINAL.is_dir() else DEMO_DIR


def select_images(files: list[DiscoveredFile], limit: int | None) -> list[DiscoveredFile]:
    """``limit`` files spread evenly over ``files`` (all classes of a class-sorted folder), in order.

    A ``limit`` above the number of usable files repeats them in order (``stage_images`` gives every copy a file
    of its own): on a GPU a run of a few batches is mostly the decoder's and the engine's start-up, and the
    images at hand (e.g. the 2,556 development images) are too few for a steady-state figure.
    """
    usable = [item for item in files if item.problem is None]
    if limit is not None and usable and limit > len(usable):
        return [usable[i % len(usable)] for i in range(limit)]
    if limit is None or limit >= len(usable):
        return usable
    picks = np.linspace(0, len(usable) - 1, num=limit).round().astype(int)
    return [usable[i] for i in picks]


def stage_images(files: list[DiscoveredFile], folder: Path) -> None:
    """Copy ``files`` flat into ``folder`` (``000000-name.jpg``, keeping their order): every measurement then
    reads the same bytes from the same file system."""
    folder.mkdir(parents=True)
    for index, item in enumerate(files):
        shutil.copyfile(item.path, folder / f"{index:06d}-{item.path.name}")


def describe_images(folder: Path) -> dict[str, Any]:
    """Count, bytes and pixel sizes (from the headers) of the benchmark images."""
    from PIL import Image

    sizes: list[tuple[int, int]] = []
    total = 0
    for path in sorted(folder.iterdir()):
        total += path.stat().st_size
        with Image.open(path) as image:
            sizes.append(image.size)
    megapixels = [w * h / 1e6 for w, h in sizes]
    smallest = min(sizes, key=lambda size: size[0] * size[1])
    largest = max(sizes, key=lambda size: size[0] * size[1])
    return {
        "images": len(sizes),
        "bytes_total": total,
        "width_height_min": list(smallest),
        "width_height_max": list(largest),
        "megapixels_median": round(float(np.median(megapixels)), 3),
    }


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


def run_bench(config: BenchConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Run every measurement of ``config`` and return the report document (JSON-serialisable).

    Raises:
        AllbatchError: bad options, no images, unusable backend/decoder, model that does not verify.
    """
    from allbatch.backends.select import HOST_BACKENDS, backend_status, choose_backend, create_backend
    from allbatch.prepare.dali import pipeline_cache

    config.validate()
    say = progress or (lambda message: log.info("%s", message))
    source = config.source if config.source is not None else default_source()
    chosen_backend, _ = choose_backend(config.backend, backend_status)
    limit = config.limit if config.limit is not None else default_limit(chosen_backend not in HOST_BACKENDS)
    files = select_images(discover(source), limit)
    builds_before = pipeline_cache.stats()
    if not files:
        raise UserInputError(f"no readable images under {source}")
    artifact = load_model_artifact(config.model)
    load_before = machine_load()
    started = datetime.now(UTC)
    series = {size: _Series() for size in config.batch_sizes}
    baseline_seconds: list[float] = []
    baseline_result: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="allbatch-bench-") as tmp, LoadMonitor() as monitor, ExitStack() as backends:
        images = Path(tmp) / "images"
        stage_images(files, images)
        warm = Path(tmp) / "warmup"
        stage_images(files[: 2 * max(config.batch_sizes)], warm)
        baseline_files = files[: config.baseline_limit]
        baseline_folder = images
        if len(baseline_files) < len(files):
            baseline_folder = Path(tmp) / "baseline"
            stage_images(baseline_files, baseline_folder)
        output = Path(tmp) / "results.h5"
        # Infer-only: the backend ``run`` would choose, built by the same function, kept open across rounds.
        resolved: dict[int, tuple[Backend, Any]] = {}
        for size in config.batch_sizes:
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
        any_backend = resolved[config.batch_sizes[0]][0]
        on_host = any_backend.name in HOST_BACKENDS
        sync = device_synchronizer(not on_host)
        images_info = {**describe_images(images), "distinct_files": len({item.path for item in files})}
        calls = {size: -(-len(files) // size) for size in config.batch_sizes}
        for round_index in range(config.warmup + config.repeats):
            timed_round = round_index >= config.warmup
            folder = images if timed_round else warm
            label = f"round {round_index - config.warmup + 1}/{config.repeats}" if timed_round else "warm-up"
            for size in config.batch_sizes:
                say(f"{label}, batch {size}: serial pipeline with stage timer")
                timer = StageTimer(None if on_host else sync)
                backend, batch = resolved[size]  # the runs use the backend opened once (start-up paid once)
                serial = run(_run_config(config, folder, output, size, serial=True), timer=timer, backend=backend)
                say(f"{label}, batch {size}: pipeline (threads)")
                threaded = run(_run_config(config, folder, output, size, serial=False), backend=backend)
                series[size].startup_seconds.extend([serial.startup_seconds, threaded.startup_seconds])
                say(f"{label}, batch {size}: infer-only")
                sync()
                tic = time.perf_counter()
                for _ in range(calls[size] if timed_round else 1):
                    backend.infer(batch)
                sync()
                infer_seconds = time.perf_counter() - tic
                if timed_round:
                    entry = series[size]
                    entry.serial_stages.append(timer.to_dict())
                    entry.serial_seconds.append(serial.seconds)
                    entry.end_to_end_seconds.append(threaded.seconds)
                    entry.infer_only_seconds.append(infer_seconds)
                    entry.summary = threaded
            if config.baseline:
                say(f"{label}: naive per-image baseline")
                result = measure_naive(baseline_folder if timed_round else warm, artifact, "cpu" if on_host else "cuda")
                if timed_round:
                    baseline_seconds.append(result["seconds"])
                    baseline_result = result
        details = any_backend.describe()
    load = {"before": load_before, "during_run": monitor.report(), "after": machine_load()}
    builds_after = pipeline_cache.stats()
    pipelines = {
        "built": builds_after.builds - builds_before.builds,
        "reused": builds_after.reuses - builds_before.reuses,
        "build_seconds": round(builds_after.build_seconds - builds_before.build_seconds, 3),
    }
    return _report(config, source, artifact, images_n=len(files), images_info=images_info, series=series, calls=calls,
                   baseline_n=len(baseline_files), baseline_seconds=baseline_seconds, baseline=baseline_result,
                   backend_details=details, load=load, started=started, limit=limit, pipelines=pipelines)  # fmt: skip


def _rates(images: int, seconds: list[float]) -> list[float]:
    return [images / s for s in seconds if s > 0]


def _median(values: list[float]) -> float | None:
    return round(float(np.median(values)), 4) if values else None


def _report(
    config: BenchConfig,
    source: Path,
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
    limit: int | None = None,
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
                "timed_runs_seconds": summarise(entry.startup_seconds[2 * config.warmup :]),
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
            "source": str(source),
            "limit": config.limit,
            "images_timed": images_n,
            "default_limit": limit if config.limit is None else None,
            "tuning": config.tuning.to_dict(),
            "baseline_limit": config.baseline_limit,
            "batch_sizes": list(config.batch_sizes),
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
