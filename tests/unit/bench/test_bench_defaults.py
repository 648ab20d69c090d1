"""``allbatch bench`` with its defaults: says which images it uses (the development dataset found beside a
non-editable install too), caps batch sizes at the images, reports progress over every image it puts through a
network, and keeps the default work small (16 images, batch 8 and 16, 2 rounds, baseline on 8). A tiny model and
a few images; no timing is asserted."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from allbatch.bench import images as bench_images
from allbatch.bench.runner import DEFAULT_LIMIT, BenchConfig, BenchProgress, plan_bench, run_bench
from allbatch.cli import app as cli_app
from allbatch.cli.bench_cmd import bench_progress
from allbatch.cli.run_cmd import DEMO_DIR


def _no_dataset_anywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every place the dataset is looked for points into an empty tmp tree (the machine's own copy is hidden)."""
    empty = tmp_path / "elsewhere" / "checkout"
    empty.mkdir(parents=True)
    monkeypatch.setattr(bench_images, "REPO_ROOT", empty)
    monkeypatch.setattr(sys, "prefix", str(empty / ".venv"))
    monkeypatch.chdir(empty)


def test_the_dataset_beside_a_non_editable_install_is_found_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_dataset_anywhere(monkeypatch, tmp_path)
    assert bench_images.resolve_source(None).path == bench_images.DEMO_DIR
    assert "not found" in bench_images.resolve_source(None).origin and "give SRC" in bench_images.resolve_source(None).origin
    # a fresh clone with `pip install .` into its .venv: the code runs from site-packages, the dataset sits beside the clone
    clone = tmp_path / "work" / "clone"
    dataset = tmp_path / "work" / "shared" / "data" / "all-kaggle" / "Original"
    shutil.copytree(DEMO_DIR, dataset, ignore=shutil.ignore_patterns("*.md"))
    monkeypatch.setattr(sys, "prefix", str(clone / ".venv"))
    source = bench_images.resolve_source(None)
    assert source.path == dataset and source.origin == f"the development dataset at {dataset}"
    assert bench_images.resolve_source(tmp_path).origin == f"SRC {tmp_path}"


def test_batch_sizes_are_capped_at_the_images_and_the_plan_says_so() -> None:
    plan = plan_bench(BenchConfig(source=DEMO_DIR, limit=4, batch_sizes=(8, 2, 16)))
    assert len(plan.files) == 4 and plan.batch_sizes == (4, 2) and plan.requested_batch_sizes == (8, 2, 16)
    text = "\n".join(plan.describe())
    assert "images: 4 of 8, spread from SRC" in text and "batch sizes: 4, 2 (asked 8, 2, 16; capped at the 4 images" in text
    assert plan.warmup_images == 2 and plan.baseline_images == 4


def test_defaults_are_small() -> None:
    config = BenchConfig(source=DEMO_DIR)
    assert (config.batch_sizes, config.repeats, config.warmup, config.baseline_limit, DEFAULT_LIMIT) == ((8, 16), 2, 1, 8, 16)
    plan = plan_bench(config)
    assert len(plan.files) == 8 and plan.batch_sizes == (8,)  # a smaller folder: all of it, never repeated unasked
    assert "images: all 8 from SRC" in plan.describe()[0]
    help_text = " ".join(CliRunner().invoke(_app(), ["bench", "--help"]).output.split())  # wrapping depends on the widest option
    assert "[default: 8,16]" in help_text and "[default: 2]" in help_text and "default: 16" in help_text


def _app():  # type: ignore[no-untyped-def]
    cli_app._register()
    return cli_app.app


def test_progress_counts_every_image_through_a_network(tiny_model: Path) -> None:
    config = BenchConfig(source=DEMO_DIR, model=tiny_model, backend="onnxruntime", decoder="cpu", limit=6, batch_sizes=(4, 8))
    config.baseline = False  # the naive loop's images are counted the same way; torch stays out of this test
    plan = plan_bench(config)
    seen: list[BenchProgress] = []
    doc = run_bench(config, progress=seen.append, plan=plan)
    assert plan.batch_sizes == (4, 6) and doc["config"]["batch_sizes"] == [4, 6] and doc["config"]["requested_batch_sizes"] == [4, 8]
    assert all(p.total == plan.total_work() for p in seen)
    assert [p.done for p in seen] == sorted(p.done for p in seen)  # never goes back
    assert seen[-1].done == plan.total_work()
    # warm-up: one batch of the smallest size per batch size (pipeline + one infer call); 2 timed rounds of 2 passes + infer
    assert plan.total_work() == (4 + 4) + (4 + 6) + 2 * ((2 * 6 + 2 * 4) + (2 * 6 + 1 * 6))
    steps = {p.step for p in seen}
    assert {"warm-up, batch 4: pipeline (threads)", "round 2/2, batch 6: serial pipeline with stage timer"} <= steps
    assert doc["input"]["origin"] == f"SRC {DEMO_DIR}" and doc["input"]["found_in_source"] == 8


def test_progress_without_a_terminal_logs_each_step(caplog: pytest.LogCaptureFixture) -> None:
    console = Console(stderr=True)
    with caplog.at_level(logging.INFO, logger="allbatch.bench"), bench_progress(console, quiet=False, terminal=False) as report:
        assert report is not None
        report(BenchProgress("warm-up, batch 8: pipeline (threads)", 0, 40))
        report(BenchProgress("warm-up, batch 8: pipeline (threads)", 4, 40))
        report(BenchProgress("round 1/2, batch 8: infer-only", 8, 40))
    assert [r.getMessage() for r in caplog.records] == [
        "bench 0/40 images: warm-up, batch 8: pipeline (threads)",
        "bench 8/40 images: round 1/2, batch 8: infer-only",
    ]
    with bench_progress(console, quiet=True, terminal=True) as nothing:
        assert nothing is None


def test_the_cli_says_which_images_and_batch_sizes_before_it_runs(tmp_path: Path, tiny_model: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        _app(),
        ["bench", str(DEMO_DIR), "--model", str(tiny_model), "--backend", "onnxruntime", "--decoder", "cpu", "--limit", "4",
         "--no-baseline", "--repeats", "1", "--warmup", "0", "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"images: 4 of 8, spread from SRC {DEMO_DIR}" in result.stderr
    assert "batch sizes: 4 (asked 8, 16; capped at the 4 images" in result.stderr
    assert json.loads(out.read_text())["config"]["batch_sizes"] == [4]
