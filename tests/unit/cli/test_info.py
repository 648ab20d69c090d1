"""``allbatch info``: the environment report collects, serialises and renders, also with only the core installed."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from allbatch import __version__
from allbatch.cli.info_report import NOT_INSTALLED, OPTIONAL_MODULES, collect_info, model_info, render_info
from allbatch.environment.cpu_features import cpu_info
from allbatch.model.manifest import manifest_path_for, sha256_of_file


@pytest.fixture(scope="module")
def info() -> dict[str, Any]:
    return collect_info()


def rendered(info: dict[str, Any]) -> str:
    table = render_info(info)
    assert isinstance(table, Table)
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(table)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(text, str)
    return text


def test_collect_info_is_complete_and_json_serialisable(info: dict[str, Any]) -> None:
    import onnxruntime

    assert json.loads(json.dumps(info)) == info
    assert info["allbatch"] == __version__
    assert info["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert info["libraries"]["numpy"] == np.__version__
    assert info["libraries"]["onnxruntime"] == onnxruntime.__version__
    assert set(info["libraries"]) == {"numpy", "h5py", "pillow", "onnx", "onnxruntime", "typer", "rich"}
    assert set(info["optional_libraries"]) == set(OPTIONAL_MODULES)
    assert set(info["backends"]) == {"onnxruntime", "openvino", "torch", "tensorrt"}
    assert info["backend_auto"]["backend"] in info["backends"] and info["backend_auto"]["reason"]
    isa = info["cpu"]["isa"]
    assert set(isa) >= {"avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"}
    assert info["cpu"]["native_bf16"] == (isa["avx512_bf16"] or isa["amx_bf16"])
    assert set(info["decoders"]) == {"cpu", "dali", "dali-cpu"}
    assert info["backends"]["onnxruntime"]["available"] is True
    assert info["cpu"]["logical_cores"] >= 1 and info["cpu"]["model"]
    for gpu in info["gpus"]:
        assert gpu["name"] and gpu["source"] in ("nvidia-smi", "cupy", "torch")
    assert set(info["model"]) >= {"path", "exists", "sha256", "verified", "error"}


def test_optional_versions_match_what_imports(info: dict[str, Any]) -> None:
    try:
        import torch
    except ImportError:
        assert info["optional_libraries"]["torch"] == NOT_INSTALLED
    else:
        assert info["optional_libraries"]["torch"] == torch.__version__


def test_render_shows_every_section(info: dict[str, Any]) -> None:
    text = rendered(info)
    needles = ("numpy", "cpu isa", "backend onnxruntime", "backend openvino", "backend torch", "backend tensorrt", "backend auto")
    for needle in (*needles, "decoder cpu", "decoder dali", "model verified"):
        assert needle in text, needle


def test_works_with_only_the_core_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """None in sys.modules makes `import X` raise ImportError, as on a machine without the GPU packages."""
    for module in (*OPTIONAL_MODULES, "cupy.cuda"):
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)  # no nvidia-smi either
    info = collect_info()
    assert info["optional_libraries"] == dict.fromkeys(OPTIONAL_MODULES, NOT_INSTALLED)
    assert info["gpus"] == []
    assert info["backends"]["torch"] == {"available": False, "reason": "torch not installed (pip install torch)"}
    assert info["backends"]["tensorrt"]["available"] is False
    assert info["backends"]["onnxruntime"]["available"] is True
    assert info["decoders"]["dali"] == {"available": False, "reason": "nvidia-dali not installed"}
    assert info["decoders"]["cpu"]["available"] is True
    assert "torch not installed" in rendered(info)


def test_model_info_verifies_the_artifact(tiny_model: Path, tmp_path: Path) -> None:
    good = model_info(tiny_model)
    assert good["verified"] is True and good["error"] == ""
    assert good["sha256"] == sha256_of_file(tiny_model)
    corrupt = tmp_path / "model.onnx"
    corrupt.write_bytes(tiny_model.read_bytes() + b"\0")
    shutil.copy(manifest_path_for(tiny_model), manifest_path_for(corrupt))
    bad = model_info(corrupt)
    assert bad["verified"] is False and "does not match its manifest" in bad["error"]
    assert bad["sha256"] == sha256_of_file(corrupt)
    missing = model_info(tmp_path / "absent.onnx")
    assert missing["exists"] is False and missing["verified"] is False


def test_cpu_info_counts_cores() -> None:
    cpu = cpu_info()
    assert cpu["usable_cores"] is not None and 1 <= cpu["usable_cores"] <= cpu["logical_cores"]


def test_cli_info_json_and_table() -> None:
    from allbatch.cli.app import _register, app

    _register()
    runner = CliRunner()
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["allbatch"] == __version__ and report["backends"]["onnxruntime"]["available"] is True
    table = runner.invoke(app, ["info"])
    assert table.exit_code == 0, table.output
    assert "backend onnxruntime" in table.stdout and "yes" in table.stdout


def _isa(**flags: bool) -> dict[str, Any]:
    return {"isa": {"avx2": True, "avx512": False, "amx_bf16": False, **flags}}


def test_openvino_advice_only_where_it_would_be_faster() -> None:
    from allbatch.cli.info_report import openvino_advice

    missing = {"openvino": {"available": False, "reason": "openvino not installed"}}
    present = {"openvino": {"available": True, "reason": "openvino 2026.4"}}
    line = openvino_advice(_isa(avx512=True), missing, "onnxruntime")
    assert line is not None and "AVX-512" in line and "pip install 'allbatch[openvino]'" in line and "1.8x" in line
    assert "AMX" in str(openvino_advice(_isa(avx512=True, amx_bf16=True), missing, "onnxruntime"))
    assert openvino_advice(_isa(avx512=True), present, "openvino") is None  # already used
    assert openvino_advice(_isa(avx512=True), missing, "torch") is None  # a GPU backend runs
    assert openvino_advice(_isa(), missing, "onnxruntime") is None  # AVX2 only: no gain measured


def test_info_prints_the_openvino_advice_when_it_is_missing_on_an_avx512_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from allbatch.backends import select
    from allbatch.cli import info_report

    real = cpu_info()
    monkeypatch.setattr(info_report, "cpu_info", lambda: {**real, "isa": {**real["isa"], "avx512": True}})
    for name in ("openvino", "torch", "tensorrt"):  # as on a CPU machine with the core install only
        monkeypatch.setitem(select._BACKEND_STATUS, name, lambda name=name: (False, f"{name} not installed"))
    info = collect_info()
    assert info["backend_auto"]["backend"] == "onnxruntime"
    (advice,) = info["advice"]
    assert "OpenVINO runtime would be faster here" in advice
    assert "advice" in rendered(info) and "would be faster here" in rendered(info)
