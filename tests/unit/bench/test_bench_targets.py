"""Target verdicts, limiting stage, statistics and image selection of the benchmark (pure functions)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from paths import REPO

from allbatch.bench.runner import select_images
from allbatch.bench.timing import summarise, throughput
from allbatch.cli.bench_cmd import parse_batch_sizes
from allbatch.core.errors import UserInputError
from allbatch.input.discover import DiscoveredFile

SHARES = {"read": 0.01, "prepare": 0.11, "infer": 0.85, "write": 0.03}
REPORT_SCRIPT = REPO / "benchmarks" / "report.py"


@pytest.fixture(scope="module")
def report() -> ModuleType:
    """benchmarks/report.py (benchmark-only code, not part of the installed package), loaded from its file."""
    spec = importlib.util.spec_from_file_location("bench_report", REPORT_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def doc(*, backend: str = "onnxruntime", decoder: str = "cpu", device: str = "cpu (2 cores)", full: bool = True,
        e2e: float = 18.0, vs_infer: float = 0.9, vs_baseline: float | None = 1.8) -> dict[str, object]:  # fmt: skip
    """The parts of a bench report the targets read."""
    return {
        "summary": {"best_batch_size": 8, "end_to_end_images_per_s": e2e, "end_to_end_vs_infer_only": vs_infer,
                    "end_to_end_vs_baseline": vs_baseline},
        "pipeline": {"backend": backend, "decoder": decoder, "device": device},
        "model": {"full_densenet201": full},
        "batch_sizes": {"8": {"serial": {"stages": {stage: {"share": share} for stage, share in SHARES.items()}}}},
    }  # fmt: skip


def test_cpu_run_meets_and_misses_with_the_limiting_stage(report: ModuleType) -> None:
    targets = report.evaluate_targets(doc(vs_infer=0.8, vs_baseline=1.6))
    assert targets["end_to_end_vs_infer_only"]["met"] is False
    assert targets["end_to_end_vs_infer_only"]["limiting_stage"] == {"stage": "infer", "share": 0.85}
    cpu = targets["end_to_end_vs_baseline_cpu"]
    assert (cpu["met"], cpu["applicable"], cpu["measured"]) == (True, True, 1.6)
    assert "limiting_stage" not in targets["end_to_end_vs_baseline_cpu"]
    assert targets["end_to_end_vs_baseline_gpu"]["applicable"] is False
    openvino = report.evaluate_targets(doc(backend="openvino", vs_baseline=1.2))
    assert openvino["end_to_end_vs_baseline_cpu"]["applicable"] is True and openvino["end_to_end_vs_baseline_cpu"]["met"] is False
    assert report.evaluate_targets(doc(full=False))["end_to_end_vs_baseline_cpu"]["applicable"] is False


def test_h100_target_applies_only_to_dali_and_torch_on_an_h100(report: ModuleType) -> None:
    h100 = doc(backend="torch", decoder="dali", device="NVIDIA H100 80GB HBM3", e2e=3100.0, vs_baseline=25.0)
    targets = report.evaluate_targets(h100)
    assert (targets["end_to_end_h100"]["met"], targets["end_to_end_h100"]["applicable"]) == (True, True)
    assert targets["end_to_end_vs_baseline_gpu"]["applicable"] is True and targets["end_to_end_vs_baseline_cpu"]["applicable"] is False
    assert report.evaluate_targets(doc(backend="tensorrt", decoder="dali", device="NVIDIA H100"))["end_to_end_h100"]["applicable"] is False


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
def test_the_3000_target_applies_on_h100_and_h200(report: ModuleType, name: str, hopper: bool) -> None:
    assert report.is_hopper(name) is hopper


def test_without_a_baseline_the_baseline_targets_are_not_measured(report: ModuleType) -> None:
    targets = report.evaluate_targets(doc(vs_baseline=None))
    assert targets["end_to_end_vs_baseline_cpu"]["met"] is None and targets["end_to_end_vs_baseline_cpu"]["measured"] is None


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
    assert len(select_images(files, None)) == 10 and len(select_images(files, 10)) == 10
    # more than the folder holds: its usable files repeated in order (a GPU needs more images than a folder has)
    repeated = select_images(files, 25)
    assert [f.relpath for f in repeated] == [f"{i % 10}.jpg" for i in range(25)]


@pytest.mark.parametrize(("text", "expected"), [("8,32,128", (8, 32, 128)), ("4", (4,)), ("8, 8,16", (8, 16))])
def test_parse_batch_sizes(text: str, expected: tuple[int, ...]) -> None:
    assert parse_batch_sizes(text) == expected


@pytest.mark.parametrize("text", ["", "0", "8,-1", "a,b"])
def test_parse_batch_sizes_rejects(text: str) -> None:
    with pytest.raises(UserInputError):
        parse_batch_sizes(text)
