"""A tiny real run of ``allbatch bench`` (8 demo images, the tiny model, batch 4, two rounds): the report has
every stage of the pipeline's timer, the paired ratios, the baseline, the CPU's ISA; benchmarks/report.py adds
targets and plots. No timing is asserted: benchmarks are not tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO
from typer.testing import CliRunner

from allbatch.cli import app as cli_app
from allbatch.cli.run_cmd import DEMO_DIR
from allbatch.core.stage_timer import STAGES

REPORT_SCRIPT = REPO / "benchmarks" / "report.py"

pytest.importorskip("cv2", reason="the naive baseline uses OpenCV")
pytest.importorskip("matplotlib", reason="the report plots use matplotlib")


def test_bench_writes_a_complete_report(tmp_path: Path, tiny_model: Path) -> None:
    cli_app._register()
    out = tmp_path / "results" / "smoke.json"
    result = CliRunner().invoke(
        cli_app.app,
        ["bench", str(DEMO_DIR), "--model", str(tiny_model), "--backend", "onnxruntime", "--decoder", "cpu",
         "--batch-sizes", "4", "--repeats", "2", "--warmup", "1", "--json", str(out), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text(encoding="utf-8"))

    assert doc["input"]["images"] == 8
    assert doc["config"]["requested"] == {"backend": "onnxruntime", "decoder": "cpu", "precision": "fp16"}
    assert doc["pipeline"]["backend"] == "onnxruntime" and doc["pipeline"]["decoder"] == "cpu"
    assert doc["pipeline"]["compute_precision"] == "fp32"  # what the backend used, not what was asked
    assert doc["model"]["full_densenet201"] is False and doc["model"]["sha256"] and doc["model"]["gflop_per_image"] > 0
    entry = doc["batch_sizes"]["4"]
    stages = entry["serial"]["stages"]
    assert list(stages) == list(STAGES)  # measured by the pipeline's own stage timer
    for stage in STAGES:
        assert stages[stage]["seconds"]["n"] == 2 and stages[stage]["seconds"]["median"] > 0
    assert sum(stage["share"] for stage in stages.values()) == pytest.approx(1.0, abs=1e-3)
    assert entry["end_to_end"]["summary"]["processed"] == 8 and entry["end_to_end"]["summary"]["ok"] == 8
    for measurement in ("end_to_end", "serial", "infer_only"):
        assert entry[measurement]["images_per_s"]["n"] == 2 and entry[measurement]["images_per_s"]["median"] > 0
    assert entry["infer_only"]["calls_per_round"] == 2 and entry["infer_only"]["gflop_per_s"] > 0
    ratios = entry["ratios"]
    assert ratios["end_to_end_vs_infer_only"] > 0 and ratios["end_to_end_vs_baseline"] > 0 and ratios["serial_vs_end_to_end"] > 0

    baseline = doc["baseline"]
    assert baseline["device"] == "cpu" and baseline["images_per_s"]["n"] == 2 and baseline["precision"] == "fp32"
    summary = doc["summary"]
    assert summary["best_batch_size"] == 4 and summary["end_to_end_vs_baseline"] == ratios["end_to_end_vs_baseline"]
    assert summary["cpu_peak_gflop_per_s"] == doc["environment"]["cpu"]["peak_gflops"]

    cpu = doc["environment"]["cpu"]
    assert cpu["model"] and cpu["usable_cores"] >= 1 and set(cpu["isa"]) >= {"avx2", "avx512", "avx512_vnni", "amx_bf16"}
    assert doc["environment"]["libraries"]["onnxruntime"] and "command" in doc["environment"]
    assert "loadavg_1_5_15" in doc["machine_load"]["before"] and "during_run" in doc["machine_load"]

    # benchmarks/report.py: targets and plots beside the JSON
    done = subprocess.run([sys.executable, str(REPORT_SCRIPT), str(out)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert set(doc["targets"]) == {
        "end_to_end_vs_infer_only",
        "end_to_end_vs_baseline_cpu",
        "end_to_end_vs_baseline_gpu",
        "end_to_end_h100",
    }
    assert doc["targets"]["end_to_end_vs_baseline_cpu"]["applicable"] is False  # tiny model, not the full DenseNet201
    assert "end_to_end_vs_infer_only: " in done.stdout
    assert (out.parent / "smoke-stages.png").stat().st_size > 0 and (out.parent / "smoke-batch-sweep.png").stat().st_size > 0


def test_a_limit_above_the_folder_repeats_it_and_the_baseline_can_be_capped(tmp_path: Path, tiny_model: Path) -> None:
    cli_app._register()
    out = tmp_path / "big.json"
    result = CliRunner().invoke(
        cli_app.app,
        ["bench", str(DEMO_DIR), "--model", str(tiny_model), "--backend", "onnxruntime", "--decoder", "cpu",
         "--batch-sizes", "4", "--repeats", "1", "--warmup", "0", "--limit", "12", "--baseline-limit", "3",
         "--json", str(out), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text(encoding="utf-8"))
    # the 8 demo images, then 4 of them again, each copy a file of its own: 12 rows written, 12 ok
    assert doc["input"]["images"] == 12 and doc["input"]["distinct_files"] == 8
    assert doc["batch_sizes"]["4"]["end_to_end"]["summary"]["ok"] == 12
    # the naive loop timed on the first 3 only, its rate over those 3
    assert doc["config"]["baseline_limit"] == 3 and doc["baseline"]["images"] == 3


def test_bad_batch_sizes_are_a_user_error(tmp_path: Path) -> None:
    cli_app._register()
    result = CliRunner().invoke(cli_app.app, ["bench", str(DEMO_DIR), "--batch-sizes", "8,x", "--json", str(tmp_path / "x.json")])
    assert result.exit_code != 0
    assert not (tmp_path / "x.json").exists()
