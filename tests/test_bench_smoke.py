"""A tiny real run of ``allbatch bench`` (8 demo images, the tiny model, batch 4, one repeat): the report
has every stage, the ratios, the baseline and the targets. No timing is asserted: benchmarks are not tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from allbatch.bench.spec import STAGES
from allbatch.cli import app as cli_app
from allbatch.cli.run_cmd import DEMO_DIR

pytest.importorskip("cv2", reason="the naive baseline uses OpenCV")
pytest.importorskip("matplotlib", reason="the report plots use matplotlib")


def test_bench_writes_a_complete_report(tmp_path: Path, tiny_model: Path) -> None:
    cli_app._register()
    out = tmp_path / "results" / "smoke.json"
    result = CliRunner().invoke(
        cli_app.app,
        ["bench", str(DEMO_DIR), "--model", str(tiny_model), "--backend", "onnxruntime", "--decoder", "cpu",
         "--batch-sizes", "4", "--repeats", "1", "--warmup", "1", "--json", str(out), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text(encoding="utf-8"))

    assert doc["input"]["images"] == 8
    assert doc["config"]["backend"] == "onnxruntime" and doc["config"]["decoder"] == "cpu"
    assert doc["model"]["full_densenet201"] is False and doc["model"]["sha256"]
    entry = doc["batch_sizes"]["4"]
    stages = entry["stages"]["stages"]
    assert list(stages) == list(STAGES)
    for stage in STAGES:
        assert stages[stage]["seconds"]["n"] == 1
        assert stages[stage]["images_per_s"]["median"] > 0
    assert sum(stages[stage]["share"] for stage in STAGES) == pytest.approx(1.0, abs=1e-3)
    assert entry["infer_only"]["images_per_s"]["median"] > 0
    e2e = entry["end_to_end"]
    assert e2e["summary"]["processed"] == 8 and e2e["summary"]["ok"] == 8
    assert e2e["steady_images"] == 4  # two batches of 4: the second is steady state
    assert e2e["images_per_s"]["median"] > 0 and e2e["images_per_s_steady"]["median"] > 0 and e2e["peak_rss_mib"] > 0
    assert e2e["images_per_s_incl_setup"]["median"] < e2e["images_per_s"]["median"]  # model loading is excluded
    assert entry["ratios"]["end_to_end_vs_infer_only"] > 0 and entry["ratios"]["end_to_end_vs_baseline"] > 0

    baseline = doc["baseline"]
    assert baseline["images"] == 8 and baseline["device"] == "cpu"
    # Same images, same weights: eager torch fp32 and ONNX Runtime agree on every image.
    assert baseline["agreement_with_pipeline"]["images"] == 8
    assert baseline["agreement_with_pipeline"]["max_abs_prob_diff"] < 1e-3
    assert baseline["agreement_with_pipeline"]["label_agreement"] == 1.0

    summary = doc["summary"]
    assert summary["best_batch_size"] == 4
    expected_ratio = summary["end_to_end_images_per_s"] / summary["baseline_images_per_s"]
    assert summary["end_to_end_vs_baseline"] == pytest.approx(expected_ratio, rel=1e-2)
    targets = doc["targets"]
    assert set(targets) == {"end_to_end_vs_infer_only", "end_to_end_vs_baseline_cpu", "end_to_end_vs_baseline_gpu", "end_to_end_h100"}
    for target in targets.values():
        assert isinstance(target["met"], bool) and target["measured"] is not None
        assert ("limiting_stage" in target) == (target["met"] is False)
    assert targets["end_to_end_vs_baseline_cpu"]["applicable"] is False  # tiny model, not the full DenseNet201
    assert targets["end_to_end_vs_infer_only"]["applicable"] is True

    env = doc["environment"]
    assert env["cpu"]["logical_cores"] and env["libraries"]["onnxruntime"] and "command" in env
    assert "loadavg_1_5_15" in doc["machine_load"]["before"] and "during_run" in doc["machine_load"]
    assert (out.parent / "smoke-stages.png").stat().st_size > 0
    assert (out.parent / "smoke-batch-sweep.png").stat().st_size > 0
    assert doc["plots"] == {"stages": "smoke-stages.png", "batch_sweep": "smoke-batch-sweep.png"}


def test_bad_batch_sizes_are_a_user_error(tmp_path: Path) -> None:
    cli_app._register()
    result = CliRunner().invoke(cli_app.app, ["bench", str(DEMO_DIR), "--batch-sizes", "8,x", "--json", str(tmp_path / "x.json")])
    assert result.exit_code != 0
    assert not (tmp_path / "x.json").exists()
