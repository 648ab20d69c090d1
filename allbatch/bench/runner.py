"""``run_bench``: pick the images and the model, run every measurement in a fresh worker process,
and assemble the report document (statistics, ratios, targets, environment)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from allbatch.bench.environment import REPO_ROOT, collect_environment, machine_load
from allbatch.bench.load_monitor import LoadMonitor
from allbatch.bench.models import describe_model, resolve_bench_model
from allbatch.bench.spec import STAGES, MeasureSpec, Task
from allbatch.bench.targets import TargetContext, evaluate_targets
from allbatch.bench.timing import summarise, throughput
from allbatch.discover import DiscoveredFile, discover
from allbatch.errors import AllbatchError, UserInputError

log = logging.getLogger("allbatch.bench")

SCHEMA = "allbatch-bench/1"
DATASET_ORIGINAL = REPO_ROOT.parent / "shared" / "data" / "all-kaggle" / "Original"
DEMO_DIR = REPO_ROOT / "allbatch" / "demo"


class BenchError(AllbatchError):
    """A measurement refused to run (bad option, missing backend, unreadable images)."""


@dataclass
class BenchConfig:
    """Everything ``allbatch bench`` needs; built by the CLI, usable from Python.

    ``source`` None means the dataset's Original folder when present, else the shipped demo images.
    ``limit`` caps the images (spread evenly over the sorted file list); None uses all of them.
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
    decode_threads: int = 2
    argv: list[str] = field(default_factory=list)

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
        if self.decode_threads < 1:
            raise UserInputError(f"--decode-threads must be at least 1, got {self.decode_threads}")


Progress = Callable[[str], None]


def default_source() -> Path:
    """The dataset's Original folder when it is beside the checkout, else the shipped demo images."""
    return DATASET_ORIGINAL if DATASET_ORIGINAL.is_dir() else DEMO_DIR


def select_images(files: list[DiscoveredFile], limit: int | None) -> list[DiscoveredFile]:
    """``limit`` files spread evenly over ``files`` (all classes of a class-sorted folder), in order."""
    usable = [item for item in files if item.problem is None]
    if limit is None or limit >= len(usable):
        return usable
    picks = np.linspace(0, len(usable) - 1, num=limit).round().astype(int)
    return [usable[i] for i in picks]


def stage_images(files: list[DiscoveredFile], folder: Path) -> None:
    """Copy ``files`` flat into ``folder`` (``000000-name.jpg``, keeping their order): every
    measurement then reads the same bytes from the same file system."""
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


def resolve_names(backend: str, decoder: str) -> tuple[str, str, str]:
    """(backend, decoder, baseline device) as concrete names; the same rules as ``allbatch run``.

    Raises:
        UserInputError / BackendUnavailableError: unknown or unusable backend or decoder.
    """
    from allbatch.backends.select import choose_backend, onnxruntime_status, resolve_decoder, tensorrt_status, torch_status

    statuses = {"onnxruntime": onnxruntime_status, "torch": torch_status, "tensorrt": tensorrt_status}
    chosen, reason = choose_backend(backend, lambda name: statuses[name]())
    log.info("backend %s: %s", chosen, reason)
    resolved_decoder = resolve_decoder(decoder, for_backend=chosen)
    if resolved_decoder == "dali" and chosen == "onnxruntime":
        raise UserInputError("--decoder dali leaves images on the GPU, but onnxruntime runs on the host: use --decoder cpu or dali-cpu")
    return chosen, resolved_decoder, "cpu" if chosen == "onnxruntime" else "cuda"


def run_worker(spec: MeasureSpec) -> dict[str, Any]:
    """Run ``spec`` in a fresh ``python -m allbatch.bench.worker`` process and return its result.

    Raises:
        BenchError: the worker refused (an AllbatchError inside it).
        RuntimeError: the worker crashed (a bug; its stderr is included).
    """
    workdir = Path(spec.workdir)
    spec_path, result_path = workdir / f"{spec.task}-b{spec.batch_size}.spec.json", workdir / f"{spec.task}-b{spec.batch_size}.json"
    spec.save(spec_path)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    done = subprocess.run(
        [sys.executable, "-m", "allbatch.bench.worker", str(spec_path), str(result_path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == 2 and result_path.is_file():
        raise BenchError(f"{spec.task} (batch {spec.batch_size}): {json.loads(result_path.read_text(encoding='utf-8'))['error']}")
    if done.returncode != 0 or not result_path.is_file():
        raise RuntimeError(
            f"benchmark worker {spec.task} (batch {spec.batch_size}) failed with exit code {done.returncode}:\n{done.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
    return result


def stage_table(raw: dict[str, Any]) -> dict[str, Any]:
    """Per-stage seconds, images/s, ms per image and share of the serial wall time, from a stages result."""
    n = raw["images"]
    seconds: dict[str, list[float]] = raw["seconds"]
    medians = {stage: float(np.median(seconds[stage])) for stage in STAGES}
    total = sum(medians.values())
    serial = [sum(seconds[stage][i] for stage in STAGES) for i in range(len(seconds["read"]))]
    stages = {}
    for stage in STAGES:
        fused = stage in raw["fused_into_decode"]
        stages[stage] = {
            "seconds": summarise(seconds[stage]),
            "images_per_s": None if fused or medians[stage] <= 0 else throughput(n, seconds[stage]),
            "ms_per_image": round(1000.0 * medians[stage] / n, 4),
            "share": round(medians[stage] / total, 4) if total > 0 else 0.0,
            "fused_into": "decode" if fused else None,
        }
    return {
        "images": n,
        "stages": stages,
        "serial_seconds": summarise(serial),
        "serial_images_per_s": throughput(n, serial),
        "peak_rss_mib": raw["peak_rss_mib"],
        "device_memory": raw["device_memory"],
        "backend_device": raw["backend_device"],
        "backend_details": raw["backend_details"],
    }


def infer_table(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "images": raw["images"],
        "calls": raw["calls"],
        "images_per_s": throughput(raw["images"], raw["seconds"]),
        "peak_rss_mib": raw["peak_rss_mib"],
        "device_memory": raw["device_memory"],
    }


def end_to_end_table(raw: dict[str, Any]) -> dict[str, Any]:
    steady = throughput(raw["steady_images"], raw["steady_seconds"]) if raw["steady_seconds"] and raw["steady_images"] else None
    return {
        "images": raw["images"],
        "images_per_s": throughput(raw["images"], raw["run_seconds"]),
        "images_per_s_steady": steady,
        "steady_images": raw["steady_images"],
        "images_per_s_incl_setup": throughput(raw["images"], raw["wall_seconds"]),
        "peak_rss_mib": raw["peak_rss_mib"],
        "device_memory": raw["device_memory"],
        "summary": raw["summary"],
    }


def e2e_rate(entry: dict[str, Any]) -> float:
    """Median end-to-end images/s as the pipeline reports it (all images, model loading excluded)."""
    return float(entry["end_to_end"]["images_per_s"]["median"])


def agreement(a: list[list[float] | None], b: list[list[float] | None]) -> dict[str, Any]:
    """Max |p_a - p_b| and the fraction of equal argmax labels over images both classified."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if not pairs:
        return {"images": 0}
    pa, pb = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    return {
        "images": len(pairs),
        "max_abs_prob_diff": float(np.abs(pa - pb).max()),
        "label_agreement": float((pa.argmax(1) == pb.argmax(1)).mean()),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def run_bench(config: BenchConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Run every measurement of ``config`` and return the report document (JSON-serialisable).

    Raises:
        AllbatchError: bad options, no images, unusable backend/decoder, model that does not verify.
    """
    config.validate()
    say = progress or (lambda message: log.info("%s", message))
    source = config.source if config.source is not None else default_source()
    files = select_images(discover(source), config.limit)
    if not files:
        raise UserInputError(f"no readable images under {source}")
    artifact = resolve_bench_model(config.model)
    backend, decoder, baseline_device = resolve_names(config.backend, config.decoder)
    load_before = machine_load()
    if load_before.get("busy_processes"):
        busy = ", ".join(f"{p['command'][:60]} ({p['cpu_percent']} %)" for p in load_before["busy_processes"])
        log.warning("other processes are busy (%s): timings will be low", busy)
    started = datetime.now(UTC)
    per_size: dict[str, Any] = {}
    baseline: dict[str, Any] | None = None
    stage_probs: list[list[float] | None] = []
    with tempfile.TemporaryDirectory(prefix="allbatch-bench-") as tmp, LoadMonitor() as monitor:
        images_dir = Path(tmp) / "images"
        stage_images(files, images_dir)
        images_info = describe_images(images_dir)

        def spec(task: Task, batch_size: int) -> MeasureSpec:
            workdir = Path(tmp) / f"{task}-b{batch_size}"
            workdir.mkdir(exist_ok=True)
            return MeasureSpec(
                task=task,
                images=str(images_dir),
                model=str(artifact.onnx_path),
                backend=backend,
                decoder=decoder,
                precision=config.precision,
                batch_size=batch_size,
                repeats=config.repeats,
                warmup=config.warmup,
                decode_threads=config.decode_threads,
                device=baseline_device,
                workdir=str(workdir),
            )

        for batch_size in config.batch_sizes:
            say(f"batch {batch_size}: stage breakdown")
            stages_raw = run_worker(spec("stages", batch_size))
            stage_probs = stages_raw["probs"]
            say(f"batch {batch_size}: infer-only")
            infer_raw = run_worker(spec("infer_only", batch_size))
            say(f"batch {batch_size}: end to end (pipeline.run)")
            e2e_raw = run_worker(spec("end_to_end", batch_size))
            entry = {"stages": stage_table(stages_raw), "infer_only": infer_table(infer_raw), "end_to_end": end_to_end_table(e2e_raw)}
            entry["ratios"] = {"end_to_end_vs_infer_only": _ratio(e2e_rate(entry), entry["infer_only"]["images_per_s"]["median"])}
            per_size[str(batch_size)] = entry
            say(
                f"batch {batch_size}: end to end {e2e_rate(entry):.1f} img/s, infer-only "
                f"{entry['infer_only']['images_per_s']['median']:.1f} img/s"
            )
        if config.baseline:
            say(f"naive baseline on {baseline_device}")
            baseline_raw = run_worker(spec("baseline", 1))
            baseline = {
                "images": baseline_raw["images"],
                "images_per_s": throughput(baseline_raw["images"], baseline_raw["seconds"]),
                "device": baseline_raw["device"],
                "torch_threads": baseline_raw["torch_threads"],
                "precision": baseline_raw["precision"],
                "peak_rss_mib": baseline_raw["peak_rss_mib"],
                "device_memory": baseline_raw["device_memory"],
                "agreement_with_pipeline": agreement(baseline_raw["probs"], stage_probs),
            }
    load = {"before": load_before, "during_run": monitor.report(), "after": machine_load()}
    return assemble_report(
        config,
        source,
        artifact_info=describe_model(artifact),
        images_info=images_info,
        backend=backend,
        decoder=decoder,
        per_size=per_size,
        baseline=baseline,
        started=started,
        load=load,
    )


def assemble_report(
    config: BenchConfig,
    source: Path,
    *,
    artifact_info: dict[str, Any],
    images_info: dict[str, Any],
    backend: str,
    decoder: str,
    per_size: dict[str, Any],
    baseline: dict[str, Any] | None,
    started: datetime,
    load: dict[str, Any],
) -> dict[str, Any]:
    """The report document: config, environment, per-batch-size tables, summary ratios and targets."""
    environment = collect_environment(config.argv or list(sys.argv))
    baseline_rate = float(baseline["images_per_s"]["median"]) if baseline else None
    for entry in per_size.values():
        entry["ratios"]["end_to_end_vs_baseline"] = _ratio(e2e_rate(entry), baseline_rate)
    best = max(per_size, key=lambda size: e2e_rate(per_size[size]))
    best_entry = per_size[best]
    e2e, infer = e2e_rate(best_entry), float(best_entry["infer_only"]["images_per_s"]["median"])
    on_gpu = backend != "onnxruntime" or decoder == "dali"
    gpu_name = environment["gpus"][0]["name"] if environment["gpus"] else ""
    shares = {stage: float(values["share"]) for stage, values in best_entry["stages"]["stages"].items()}
    context = TargetContext(
        on_gpu=on_gpu,
        gpu_name=gpu_name if on_gpu else "",
        backend=backend,
        decoder=decoder,
        full_model=bool(artifact_info["full_densenet201"]),
        stage_shares=shares,
        end_to_end=e2e,
        infer_only=infer,
        baseline=baseline_rate,
    )
    return {
        "schema": SCHEMA,
        "created_utc": started.isoformat(timespec="seconds"),
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment,
        "machine_load": load,
        "config": {
            "source": str(source),
            "limit": config.limit,
            "batch_sizes": list(config.batch_sizes),
            "repeats": config.repeats,
            "warmup": config.warmup,
            "backend": backend,
            "decoder": decoder,
            "precision": config.precision,
            "decode_threads": config.decode_threads,
            "device": gpu_name if on_gpu else f"cpu ({environment['cpu']['model']}, {environment['cpu']['usable_cores']} cores)",
        },
        "model": artifact_info,
        "input": images_info,
        "method": {
            "stages": "serial: each stage of each batch timed on one thread, one after another; share = stage / sum of stages",
            "infer_only": "the backend on one real batch already resident where it computes, ceil(n / batch) calls per repeat",
            "end_to_end": "allbatch.pipeline.run into a temporary results.h5; images_per_s is the pipeline's own rate (all "
            "images, from the loaded model to the closed file), images_per_s_steady leaves out the first batch, "
            "images_per_s_incl_setup counts model loading too",
            "baseline": "per image: PIL load, OpenCV HSV, one eager torch fp32 forward, one HDF5 row write + flush",
            "statistics": "median over timed repeats, with min/max and quartiles; warm-up passes untimed",
            "memory": "peak RSS (ru_maxrss) and device memory of a fresh worker process per measurement and batch size",
        },
        "batch_sizes": per_size,
        "baseline": baseline,
        "summary": {
            "best_batch_size": int(best),
            "end_to_end_images_per_s": round(e2e, 2),
            "infer_only_images_per_s": round(infer, 2),
            "baseline_images_per_s": None if baseline_rate is None else round(baseline_rate, 2),
            "end_to_end_vs_infer_only": _ratio(e2e, infer),
            "end_to_end_vs_baseline": _ratio(e2e, baseline_rate),
        },
        "targets": evaluate_targets(context),
    }
