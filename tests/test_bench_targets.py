"""Target verdicts, limiting stage, statistics and image selection of the benchmark (pure functions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from allbatch.bench.runner import select_images
from allbatch.bench.targets import TargetContext, evaluate_targets, is_hopper
from allbatch.bench.timing import summarise, throughput
from allbatch.cli.bench_cmd import parse_batch_sizes
from allbatch.discover import DiscoveredFile
from allbatch.errors import UserInputError

SHARES = {"read": 0.01, "decode": 0.04, "segment": 0.05, "assemble": 0.02, "infer": 0.85, "write": 0.03}


def context(**changes: object) -> TargetContext:
    values: dict[str, object] = dict(
        on_gpu=False, gpu_name="", backend="onnxruntime", decoder="cpu", full_model=True,
        stage_shares=SHARES, end_to_end=18.0, infer_only=20.0, baseline=10.0,
    )  # fmt: skip
    values.update(changes)
    return TargetContext(**values)  # type: ignore[arg-type]


def test_cpu_run_meets_and_misses_with_the_limiting_stage() -> None:
    targets = evaluate_targets(context(end_to_end=16.0))
    ratio = targets["end_to_end_vs_infer_only"]
    assert ratio["measured"] == pytest.approx(0.8) and ratio["met"] is False
    assert ratio["limiting_stage"] == {"stage": "infer", "share": 0.85}
    cpu = targets["end_to_end_vs_baseline_cpu"]
    assert cpu["measured"] == pytest.approx(1.6) and cpu["met"] is True and cpu["applicable"] is True
    assert "limiting_stage" not in cpu
    assert targets["end_to_end_vs_baseline_gpu"]["applicable"] is False
    assert targets["end_to_end_h100"]["applicable"] is False


def test_h100_target_applies_only_to_dali_and_torch_on_an_h100() -> None:
    gpu = {"on_gpu": True, "backend": "torch", "end_to_end": 3500.0, "infer_only": 3600.0, "baseline": 150.0}
    on_h100 = evaluate_targets(context(gpu_name="NVIDIA H100 80GB HBM3", decoder="dali", **gpu))
    assert on_h100["end_to_end_h100"]["applicable"] is True and on_h100["end_to_end_h100"]["met"] is True
    assert on_h100["end_to_end_vs_baseline_gpu"]["measured"] == pytest.approx(3500 / 150, rel=1e-4)
    assert on_h100["end_to_end_vs_baseline_cpu"]["applicable"] is False
    cpu_decode = evaluate_targets(context(gpu_name="NVIDIA H100 80GB HBM3", decoder="cpu", **gpu))
    assert cpu_decode["end_to_end_h100"]["applicable"] is False


@pytest.mark.parametrize(
    ("name", "hopper"),
    [
        ("NVIDIA H100 80GB HBM3", True),
        ("NVIDIA H200", True),
        ("NVIDIA H100 NVL", True),
        ("NVIDIA GH200 480GB", True),
        ("NVIDIA A100-SXM4-80GB", False),
        ("NVIDIA H20", False),
        ("", False),
    ],
)
def test_the_3000_target_applies_on_h100_and_h200(name: str, hopper: bool) -> None:
    assert is_hopper(name) is hopper
    gpu = {"on_gpu": True, "backend": "torch", "decoder": "dali", "end_to_end": 3500.0}
    assert evaluate_targets(context(gpu_name=name, **gpu))["end_to_end_h100"]["applicable"] is hopper


def test_without_a_baseline_the_baseline_targets_are_not_measured() -> None:
    targets = evaluate_targets(context(baseline=None))
    assert targets["end_to_end_vs_baseline_cpu"]["measured"] is None
    assert targets["end_to_end_vs_baseline_cpu"]["met"] is None


def test_statistics() -> None:
    stats = summarise([3.0, 1.0, 2.0, 4.0])
    assert (stats["median"], stats["min"], stats["max"], stats["q1"], stats["q3"]) == (2.5, 1.0, 4.0, 1.75, 3.25)
    assert throughput(10, [2.0, 5.0])["samples"] == [5.0, 2.0]
    with pytest.raises(ValueError, match="no samples"):
        summarise([])


def test_select_images_spreads_over_the_list_and_keeps_order() -> None:
    files = [DiscoveredFile(Path(f"/x/{i}.jpg"), f"{i}.jpg") for i in range(10)]
    files.append(DiscoveredFile(Path("/x/bad"), "bad", problem="cannot list folder"))
    picked = select_images(files, 4)
    assert [f.relpath for f in picked] == ["0.jpg", "3.jpg", "6.jpg", "9.jpg"]
    assert len(select_images(files, None)) == 10 and len(select_images(files, 99)) == 10


@pytest.mark.parametrize(("text", "expected"), [("8,32,128", (8, 32, 128)), ("4", (4,)), ("8, 8,16", (8, 16))])
def test_parse_batch_sizes(text: str, expected: tuple[int, ...]) -> None:
    assert parse_batch_sizes(text) == expected


@pytest.mark.parametrize("text", ["", "0", "8,-1", "a,b"])
def test_parse_batch_sizes_rejects(text: str) -> None:
    with pytest.raises(UserInputError):
        parse_batch_sizes(text)
