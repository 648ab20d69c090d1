"""Helpers of ``benchmarks/gpu_verify.sh``: pick the images, compare two results files, write the summary.

    python benchmarks/gpu_verify.py images SRC DEST --count N     N images spread over SRC, class folders kept
    python benchmarks/gpu_verify.py compare GPU.h5 CPU.h5 --json parity.json
    python benchmarks/gpu_verify.py summary WORK OUT               OUT/summary.json from what the steps left
    python benchmarks/gpu_verify.py speed IMAGES --json speed.json [--cpu-h5 CPU.h5] [--large DIR] ...
                                                                   issue 22's old-vs-new ratios, in one process

``images``, ``compare`` and ``summary`` read only files and need no GPU; ``summary`` never fails on a missing
or broken input (a step that failed is what it reports), so the summary is written whatever happened before it.
``speed`` runs the pipeline (``allbatch.run.engine.run``) in one process on the same images with each switch of
``GpuTuning`` turned back to the old behaviour, so every gain is a ratio measured in one run on one machine; it
rewrites its JSON after every measurement, so a step killed by its time cap still returns what it measured.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

MAX_LISTED = 20
"""Disagreeing images listed by name in parity.json."""


def pick_images(src: Path, dest: Path, count: int) -> int:
    """Copy ``count`` images spread evenly over the naturally sorted files under ``src`` into ``dest``, keeping
    their folders relative to ``src`` (the class names). ``count`` 0 or above the total takes every image."""
    from allbatch.input.discover import discover

    files = [item for item in discover(src) if item.problem is None]
    if 0 < count < len(files):
        files = [files[i] for i in np.linspace(0, len(files) - 1, num=count).round().astype(int)]
    for item in files:
        target = dest / Path(item.relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.path, target)
    return len(files)


def compare(gpu_h5: Path, cpu_h5: Path) -> dict[str, Any]:
    """Label-for-label comparison of two results files of the same images (rows matched by path)."""
    from allbatch.results.reader import read_results

    gpu, cpu = read_results(gpu_h5), read_results(cpu_h5)
    cpu_row = {path: i for i, path in enumerate(cpu.paths.tolist())}
    common = [(i, cpu_row[path]) for i, path in enumerate(gpu.paths.tolist()) if path in cpu_row]
    g = np.array([i for i, _ in common], dtype=np.int64)
    c = np.array([j for _, j in common], dtype=np.int64)
    same_status = gpu.status[g] == cpu.status[c]
    both_ok = same_status & (gpu.status[g] == 0)
    labels_equal = gpu.labels[g][both_ok] == cpu.labels[c][both_ok]
    dprob = np.abs(gpu.probs[g][both_ok] - cpu.probs[c][both_ok])
    dmask = np.abs(gpu.mask_fraction[g][both_ok] - cpu.mask_fraction[c][both_ok])
    disagreeing = [
        {"path": str(gpu.paths[i]), "gpu": int(gpu.labels[i]), "cpu": int(cpu.labels[j])}
        for i, j in zip(g[both_ok][~labels_equal], c[both_ok][~labels_equal], strict=True)
    ]
    n_ok = int(both_ok.sum())
    return {
        "images_gpu": len(gpu),
        "images_cpu": len(cpu),
        "matched_by_path": len(common),
        "status_equal": int(same_status.sum()),
        "both_ok": n_ok,
        "label_agreement": round(float(labels_equal.mean()), 6) if n_ok else None,
        "labels_differing": len(disagreeing),
        "max_abs_prob_diff": float(dprob.max()) if n_ok else None,
        "mean_abs_prob_diff": float(dprob.mean()) if n_ok else None,
        "max_abs_mask_fraction_diff": float(dmask.max()) if n_ok else None,
        "disagreeing": disagreeing[:MAX_LISTED],
        "gpu": {"backend": gpu.attrs.get("backend"), "decoder": gpu.attrs.get("decoder"), "device": gpu.attrs.get("device")},
        "cpu": {"backend": cpu.attrs.get("backend"), "decoder": cpu.attrs.get("decoder"), "device": cpu.attrs.get("device")},
    }


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _junit(path: Path) -> dict[str, Any] | None:
    """Counts from a pytest junit XML (None when it is missing or unreadable)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {key: sum(int(suite.get(key, 0)) for suite in suites) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in root.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return {**counts, "failed_tests": failed[:MAX_LISTED]}


def _memory_samples(path: Path) -> dict[str, Any] | None:
    """Max and last GPU memory used (MiB, whole device) from nvidia-smi's csv samples."""
    try:
        lines = path.read_text(encoding="utf-8").split()
    except OSError:
        return None
    values = [int(v) for v in lines if v.isdigit()]
    return {"max_used_mib": max(values), "samples": len(values)} if values else None


def _bench(report: Any) -> dict[str, Any] | None:
    """The figures of an ``allbatch bench`` report that the note needs; tolerant of schema changes."""
    if not isinstance(report, dict):
        return None
    figures: dict[str, Any] = {"summary": report.get("summary"), "targets": report.get("targets")}
    memory = {}
    for batch, measured in (report.get("batch_sizes") or {}).items():
        if isinstance(measured, dict):
            memory[batch] = {name: (m or {}).get("device_memory") for name, m in measured.items() if isinstance(m, dict)}
    figures["device_memory"] = memory
    baseline = report.get("baseline")
    if isinstance(baseline, dict):
        figures["baseline_device_memory"] = baseline.get("device_memory")
        figures["baseline_agreement"] = baseline.get("agreement_with_pipeline")
    return figures


def summary(work: Path, out: Path) -> dict[str, Any]:
    """Everything the steps left in ``work`` and ``out``, in one JSON (``out/summary.json``)."""
    steps = []
    log = work / "steps.tsv"
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            name, rc, seconds = [*line.split("\t"), "", ""][:3]
            status = "ok" if rc == "0" else "timeout" if rc in ("124", "137") else "skipped" if rc == "125" else "failed"
            code = int(rc) if rc.lstrip("-").isdigit() else rc
            steps.append({"step": name, "rc": code, "seconds": float(seconds or 0), "status": status})
    result = {
        "mode": (work / "mode").read_text(encoding="utf-8").strip() if (work / "mode").is_file() else "unknown",
        "device": (work / "device").read_text(encoding="utf-8").strip() if (work / "device").is_file() else "unknown",
        "all_ok": bool(steps) and all(step["status"] == "ok" for step in steps),
        "steps": steps,
        "tests": _junit(out / "gpu-tests.xml"),
        "run_gpu_side": _json(work / "run-gpu.json"),
        "run_cpu_side": _json(work / "run-cpu.json"),
        "parity": _json(out / "parity.json"),
        "bench": _bench(_json(out / "bench.json")),
        "speed": _json(out / "speed.json"),
        "gpu_memory_nvidia_smi": _memory_samples(work / "gpu-memory.csv"),
    }
    (out / "summary.json").write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    return result


SPEED_VARIANTS: dict[str, dict[str, Any]] = {
    "new": {},
    "prefetch_depth_1": {"prefetch_depth": 1},
    "no_overlap_infer": {"overlap_infer": False},
    "no_cuda_graphs": {"cuda_graphs": False},
    "no_fancy_upsampling": {"fancy_upsampling": False},
    "old": {"prefetch_depth": 1, "overlap_infer": False, "cuda_graphs": False, "fancy_upsampling": False},
    "torch_compile": {"torch_compile": True},
}
"""Each variant turns switches of ``GpuTuning`` away from the defaults ("new"); "old" is the behaviour before issue 22."""


class _Speed:
    """The state of one ``speed`` measurement: the JSON document (rewritten after every step) and the backends,
    opened once per (cuda_graphs, torch_compile) and shared by every run that needs that pair."""

    def __init__(self, out: Path, args: argparse.Namespace) -> None:
        from contextlib import ExitStack

        from allbatch.model.manifest import load_model_artifact

        self.out, self.args = out, args
        self.artifact = load_model_artifact(args.model)
        self.stack = ExitStack()
        self.backends: dict[tuple[bool, bool], Any] = {}
        self.doc: dict[str, Any] = {"schema": "allbatch-gpu-speed/1", "config": {k: str(v) for k, v in vars(args).items()}, "steps": {}}
        self.save()

    def save(self) -> None:
        self.out.write_text(json.dumps(self.doc, indent=1, default=str) + "\n", encoding="utf-8")

    def record(self, name: str, value: Any) -> None:
        self.doc["steps"][name] = value
        self.save()

    def tuning(self, variant: str) -> Any:
        from allbatch.run.config import GpuTuning

        return GpuTuning(**SPEED_VARIANTS[variant])

    def backend(self, tuning: Any) -> Any:
        from allbatch.backends.select import create_backend

        key = (tuning.cuda_graphs, tuning.torch_compile)
        if key not in self.backends:
            began = time.perf_counter()
            backend = create_backend(
                self.args.backend, self.artifact, max_batch=self.args.batch, precision="fp16", cuda_graphs=key[0], torch_compile=key[1]
            )
            self.backends[key] = self.stack.enter_context(backend)
            self.doc.setdefault("backend_open_seconds", {})[f"graphs={key[0]},compile={key[1]}"] = round(time.perf_counter() - began, 2)
        return self.backends[key]

    def run(self, folder: Path, output: Path, tuning: Any, serial: bool = False, timer: Any = None) -> Any:
        from allbatch.run.config import RunConfig
        from allbatch.run.engine import run

        config = RunConfig(
            source=folder,
            output=output,
            model=self.args.model,
            backend=self.args.backend,
            decoder=self.args.decoder,
            batch_size=self.args.batch,
            mode="overwrite",
            decode_threads=self.args.threads,
            infer_chunk_seconds=None,
            serial=serial,
            tuning=tuning,
            group_by=None,
        )
        return run(config, timer=timer, backend=self.backend(tuning))

    def infer_only(self, tuning: Any, folder: Path, images: int) -> float:
        """Images/s of the variant's backend on one resident real batch, ceil(images / batch) calls."""
        from allbatch.backends.select import HOST_BACKENDS
        from allbatch.bench.runner import _resident_batch
        from allbatch.bench.timing import device_synchronizer

        backend = self.backend(tuning)
        batch = _resident_batch(folder, self.artifact, self.args.batch, backend)
        sync = device_synchronizer(backend.name not in HOST_BACKENDS)
        calls = -(-images // self.args.batch)
        backend.infer(batch)
        sync()
        began = time.perf_counter()
        for _ in range(calls):
            backend.infer(batch)
        sync()
        return calls * self.args.batch / (time.perf_counter() - began)


def _damage(data: bytes, seed: int) -> bytes:
    """A JPEG with its entropy-coded data scrambled past the middle (markers intact): decoders disagree on such files."""
    rng = np.random.default_rng(seed)
    damaged = bytearray(data)
    start = len(damaged) // 2
    for k in range(start, min(len(damaged) - 2, start + 600)):
        value = int(rng.integers(0, 255))
        damaged[k] = value if value != 0xFF else 0x00
    return bytes(damaged)


def speed(args: argparse.Namespace) -> dict[str, Any]:
    """Issue 22's measurements in one process (module docstring); returns the document it wrote to ``args.json``."""
    import tempfile

    from allbatch.bench.runner import select_images, stage_images
    from allbatch.bench.timing import device_memory
    from allbatch.core.stage_timer import StageTimer
    from allbatch.input.discover import discover
    from allbatch.prepare.dali import pipeline_cache

    state = _Speed(args.json, args)
    doc = state.doc
    gpu = args.backend not in ("onnxruntime", "openvino")
    # torch.compile is timed last (its compilation can take minutes): a step cap then cuts only that.
    variants = [v for v in SPEED_VARIANTS if v != "torch_compile" and (gpu or v != "no_cuda_graphs")]
    with tempfile.TemporaryDirectory(prefix="allbatch-speed-") as tmp, state.stack:
        work = Path(tmp)
        files = select_images(discover(args.images), args.repeat_to)
        repeated = work / "repeated"
        stage_images(files, repeated)
        doc["images"] = {"timed": len(files), "distinct": len({item.path for item in files})}
        # Start-up: the first run of the process builds and warms the pipeline; the next one borrows it.
        first = state.run(repeated, work / "first.h5", state.tuning("new"))
        second = state.run(repeated, work / "second.h5", state.tuning("new"))
        state.record(
            "startup",
            {
                "first_run_seconds": round(first.startup_seconds, 3),
                "second_run_seconds": round(second.startup_seconds, 3),
                "pipeline_cache": vars(pipeline_cache.stats()),
                "images_per_s_first": round(first.images_per_second, 1),
                "images_per_s_second": round(second.images_per_second, 1),
            },
        )
        # Old vs new, alternating rounds on the same images: each ratio is taken within a round.
        rates: dict[str, list[float]] = {v: [] for v in variants}
        for round_index in range(args.rounds):
            for variant in variants:
                summary = state.run(repeated, work / f"{variant}.h5", state.tuning(variant))
                rates[variant].append(summary.images_per_second)
                infer = state.infer_only(state.tuning(variant), repeated, len(files)) if round_index == 0 else None
                entry = doc["steps"].setdefault("variants", {}).setdefault(variant, {"tuning": state.tuning(variant).to_dict()})
                entry["end_to_end_images_per_s"] = [round(r, 1) for r in rates[variant]]
                entry["startup_seconds"] = round(summary.startup_seconds, 3)
                entry["ok"] = summary.ok
                if infer is not None:
                    entry["infer_only_images_per_s"] = round(infer, 1)
                state.record("variants", doc["steps"]["variants"])
        ratios = {}
        for variant in variants:
            if variant != "new" and rates[variant] and len(rates[variant]) == len(rates["new"]):
                ratios[f"new_vs_{variant}"] = round(float(np.median([n / o for n, o in zip(rates["new"], rates[variant], strict=True)])), 3)
        new = doc["steps"]["variants"]["new"]
        if new.get("infer_only_images_per_s"):
            ratios["end_to_end_vs_infer_only"] = round(float(np.median(rates["new"])) / new["infer_only_images_per_s"], 3)
        state.record("ratios", ratios)
        # Parity with and without fancy upsampling against the CPU path's results of the same images.
        if args.cpu_h5 is not None and args.cpu_h5.is_file():
            parity = {}
            for variant in ("new", "no_fancy_upsampling"):
                out = work / f"parity-{variant}.h5"
                state.run(args.images, out, state.tuning(variant))
                result = compare(out, args.cpu_h5)
                parity[variant] = {
                    k: result[k] for k in ("both_ok", "label_agreement", "labels_differing", "max_abs_prob_diff", "mean_abs_prob_diff")
                }
                state.record("parity", parity)
        # A bad file among the images: how it is caught, what it costs, and no pipeline rebuilt.
        damaged = work / "damaged"
        shutil.copytree(repeated, damaged)
        jpegs = sorted(damaged.glob("*.jpg"))
        planted = [damaged / f"zz-damaged-{k}.jpg" for k in range(3)]
        for k, target in enumerate(planted):
            target.write_bytes(_damage(jpegs[k * 7 % len(jpegs)].read_bytes(), k))
        builds = pipeline_cache.stats().builds
        clean = state.run(repeated, work / "clean.h5", state.tuning("new"))
        bad = state.run(damaged, work / "damaged.h5", state.tuning("new"))
        from allbatch.results.reader import read_results

        table = read_results(work / "damaged.h5")
        caught = [
            {"path": str(path), "status": int(status), "error": str(error)}
            for path, status, error in zip(table.paths.tolist(), table.status.tolist(), table.errors.tolist(), strict=True)
            if "zz-damaged" in str(path)
        ]
        state.record(
            "damaged",
            {
                "images": bad.processed,
                "failed": bad.failed,
                "planted": caught,
                "seconds_clean": round(clean.seconds, 3),
                "seconds_with_damaged": round(bad.seconds, 3),
                "pipelines_built_meanwhile": pipeline_cache.stats().builds - builds,
            },
        )
        # Large fields: images/s and where the time goes (the serial mode's stage timer).
        if args.large is not None and args.large.is_dir():
            from allbatch.bench.timing import device_synchronizer

            timer = StageTimer(device_synchronizer(gpu))
            serial = state.run(args.large, work / "large-serial.h5", state.tuning("new"), serial=True, timer=timer)
            threaded = state.run(args.large, work / "large.h5", state.tuning("new"))
            state.record(
                "large_fields",
                {
                    "images": threaded.processed,
                    "ok": threaded.ok,
                    "images_per_s": round(threaded.images_per_second, 2),
                    "serial_images_per_s": round(serial.images_per_second, 2),
                    "serial_stages": timer.to_dict(),
                },
            )
        state.record("device_memory", device_memory())
        if gpu and args.compile:
            _time_compile(state, repeated, len(files))
    return doc


def _time_compile(state: _Speed, folder: Path, images: int) -> None:
    """torch.compile against the defaults, alternating rounds; its compile time is start-up (``compile_seconds``)."""
    doc = state.doc
    compiled = state.tuning("torch_compile")
    entry: dict[str, Any] = {"tuning": compiled.to_dict()}
    state.record("torch_compile", entry)
    backend = state.backend(compiled)  # compiles here, in __enter__
    entry["compile_seconds"] = backend.describe().get("compile_seconds")
    entry["backend_open_seconds"] = doc.get("backend_open_seconds")
    entry["infer_only_images_per_s"] = round(state.infer_only(compiled, folder, images), 1)
    state.record("torch_compile", entry)
    new, fast = [], []
    for _ in range(state.args.rounds):
        new.append(state.run(folder, folder.parent / "cmp-new.h5", state.tuning("new")).images_per_second)
        fast.append(state.run(folder, folder.parent / "cmp-compiled.h5", compiled).images_per_second)
        entry["end_to_end_images_per_s"] = [round(r, 1) for r in fast]
        entry["new_end_to_end_images_per_s"] = [round(r, 1) for r in new]
        entry["compiled_vs_new"] = round(float(np.median([f / n for f, n in zip(fast, new, strict=True)])), 3)
        state.record("torch_compile", entry)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    images = sub.add_parser("images", help="copy N images spread over SRC into DEST")
    images.add_argument("src", type=Path)
    images.add_argument("dest", type=Path)
    images.add_argument("--count", type=int, default=0)
    comparison = sub.add_parser("compare", help="compare two results files label for label")
    comparison.add_argument("gpu", type=Path)
    comparison.add_argument("cpu", type=Path)
    comparison.add_argument("--json", type=Path, required=True)
    fast = sub.add_parser("speed", help="old-vs-new ratios of issue 22 in one process (JSON rewritten as it goes)")
    fast.add_argument("images", type=Path)
    fast.add_argument("--json", type=Path, required=True)
    fast.add_argument("--decoder", default="dali")
    fast.add_argument("--backend", default="torch")
    fast.add_argument("--batch", type=int, default=256)
    fast.add_argument("--threads", type=int, default=16)
    fast.add_argument("--repeat-to", type=int, default=4096)
    fast.add_argument("--rounds", type=int, default=2)
    fast.add_argument("--model", type=Path, default=None)
    fast.add_argument("--cpu-h5", type=Path, default=None)
    fast.add_argument("--large", type=Path, default=None)
    fast.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True, help="also time torch.compile (last)")
    summarise = sub.add_parser("summary", help="write OUT/summary.json")
    summarise.add_argument("work", type=Path)
    summarise.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "images":
        print(f"{pick_images(args.src, args.dest, args.count)} images copied into {args.dest}")
        return 0
    if args.command == "compare":
        result = compare(args.gpu, args.cpu)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(json.dumps({k: v for k, v in result.items() if k != "disagreeing"}))
        return 0
    if args.command == "speed":
        doc = speed(args)
        print(json.dumps(doc["steps"].get("ratios"), indent=1))
        return 0
    result = summary(args.work, args.out)
    print(json.dumps({k: result[k] for k in ("mode", "device", "all_ok", "steps")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
