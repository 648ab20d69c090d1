"""Issue 22 on DALI's CPU operators: the pipeline is built once per process, batches run ahead without changing
a row, a file DALI rejects costs one extra run of its batch and no rebuild, and the decoder's
``jpeg_fancy_upsampling`` reproduces the CPU path's (Pillow) decode."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from dali_support import count_fed_batches, dali_cpu_preparer, encoded, needs_dali
from image_factory import encode, smear_like

from allbatch.core.status import ImageStatus
from allbatch.prepare.cpu import PillowPreparer
from allbatch.prepare.dali import pipeline_cache
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.segment import SegmentationParams

pytestmark = needs_dali

SEG = SegmentationParams()


def damaged_png(seed: int) -> bytes:
    """A PNG whose header is sound (the host check accepts it) and whose pixel data DALI cannot inflate."""
    data = bytearray(encode(smear_like(seed), "PNG"))
    start = data.index(b"IDAT") + 20
    for k in range(start, start + 180):
        data[k] ^= 0x5A
    return bytes(data)


# ----- built once per process ----------------------------------------------------------------------


def test_runs_of_one_process_share_one_pipeline(tiny_model: Path, tmp_path: Path) -> None:
    from allbatch.run.config import RunConfig
    from allbatch.run.engine import run

    source = tmp_path / "images"
    shutil.copytree(Path(__file__).resolve().parents[3] / "allbatch" / "demo", source)
    before = pipeline_cache.stats()
    summaries = [
        run(
            RunConfig(
                source=source,
                output=tmp_path / f"out{k}.h5",
                model=tiny_model,
                backend="onnxruntime",
                decoder="dali-cpu",
                batch_size=3,
                decode_threads=1,
            )
        )
        for k in range(3)
    ]
    after = pipeline_cache.stats()
    assert all(summary.ok == 8 and summary.decoder == "dali-cpu" for summary in summaries)
    assert after.builds - before.builds <= 1  # the first run built it (unless an earlier test did)
    assert (after.builds - before.builds) + (after.reuses - before.reuses) == 3  # every run had one, the later ones reused it
    assert all(summary.startup_seconds > 0 for summary in summaries)


def test_bench_rounds_reuse_the_pipeline_and_report_start_up_apart(tiny_model: Path) -> None:
    from allbatch.bench.runner import DEFAULT_LIMIT, GPU_BENCH_IMAGES, BenchConfig, default_limit, run_bench
    from allbatch.run.config import GpuTuning

    demo = Path(__file__).resolve().parents[3] / "allbatch" / "demo"
    config = BenchConfig(source=demo, model=tiny_model, backend="onnxruntime", decoder="dali-cpu", batch_sizes=(4,), repeats=2,
                         warmup=1, baseline=False, decode_threads=1, tuning=GpuTuning(prefetch_depth=2))  # fmt: skip
    doc = run_bench(config)
    pipelines = doc["dali_pipelines"]
    assert pipelines["built"] <= 1 and pipelines["built"] + pipelines["reused"] == 5  # warm-up (threaded) + 2 x (serial + threaded)
    startup = doc["batch_sizes"]["4"]["startup"]
    assert startup["first_run_seconds"] > 0 and startup["timed_runs_seconds"]["n"] == 4
    assert doc["config"]["tuning"]["prefetch_depth"] == 2 and doc["config"]["images_timed"] == 8
    assert doc["summary"]["startup_seconds_timed_runs"] > 0
    assert default_limit("tensorrt", 8) == GPU_BENCH_IMAGES >= 4096  # a GPU backend: the steady rate needs thousands
    assert default_limit("onnxruntime", 8) == 8 and default_limit("onnxruntime", 2556) == DEFAULT_LIMIT  # the CPU: minutes


# ----- running ahead keeps order and exactness -----------------------------------------------------


def test_a_run_ahead_result_equals_the_cpu_path_row_for_row(tiny_model: Path, tmp_path: Path) -> None:
    """The engine's producer with DALI two batches ahead writes exactly the rows of the Pillow path."""
    from allbatch.results.reader import read_results
    from allbatch.run.config import GpuTuning, RunConfig
    from allbatch.run.engine import run

    source = tmp_path / "images"
    source.mkdir()
    for seed in range(11):
        (source / f"s{seed:02d}.png").write_bytes(encode(smear_like(seed), "PNG"))
    (source / "s05.png").write_bytes(damaged_png(5))  # fails in DALI only: the row keeps its place
    common = {"source": source, "model": tiny_model, "backend": "onnxruntime", "batch_size": 3, "decode_threads": 2}
    run(RunConfig(output=tmp_path / "dali.h5", decoder="dali-cpu", tuning=GpuTuning(prefetch_depth=2), **common))  # type: ignore[arg-type]
    run(RunConfig(output=tmp_path / "cpu.h5", decoder="cpu", **common))  # type: ignore[arg-type]
    dali, cpu = read_results(tmp_path / "dali.h5"), read_results(tmp_path / "cpu.h5")
    assert dali.paths.tolist() == cpu.paths.tolist()
    assert dali.status.tolist() == cpu.status.tolist() and int((dali.status != 0).sum()) == 1
    ok = dali.status == 0
    assert np.array_equal(dali.probs[ok], cpu.probs[ok]) and np.array_equal(dali.labels, cpu.labels)
    assert np.array_equal(dali.mask_fraction[ok], cpu.mask_fraction[ok])


# ----- one bad file: one extra run, no rebuild -----------------------------------------------------


def test_a_file_dali_rejects_costs_one_extra_run_and_no_rebuild() -> None:
    prep = Preprocessing()
    datas = [encode(smear_like(seed), "PNG") for seed in range(16)]
    datas[11] = damaged_png(11)
    preparer = dali_cpu_preparer(prep, max_batch=16)
    preparer.prepare(encoded(datas[:4]))  # the pipeline exists (built or borrowed)
    builds = pipeline_cache.stats().builds
    fed = count_fed_batches(preparer)
    following = preparer.start(encoded(datas[:5], 100))  # a batch under way behind the failing one
    batch = preparer.prepare(encoded(datas))
    after = preparer.finish(following)
    preparer.close()
    assert fed == [5, 16, 15]  # the batch behind, the failing run, one rerun without the file: no bisect
    assert preparer.runner.rebuilds == 0 and pipeline_cache.stats().builds == builds
    assert [i for i, image in enumerate(batch.images) if image.status != ImageStatus.OK] == [11]
    assert batch.images[11].error.startswith("DALI could not decode the image")
    pillow = PillowPreparer(prep, SEG, threads=1)
    good = [d for i, d in enumerate(datas) if i != 11]
    assert np.array_equal(batch.inputs, pillow.prepare(encoded(good)).inputs)
    assert np.array_equal(after.inputs, pillow.prepare(encoded(datas[:5])).inputs)  # the batch behind is intact


# ----- point 4: fancy upsampling ---------------------------------------------------------------------
