"""What ``allbatch run`` refuses before the model or any inference runtime loads, and models that do
not fit: one line, exit 1, nothing written and nothing left behind."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import pytest
from image_factory import write_good_images

from allbatch.core.errors import ModelError
from allbatch.model.fit import check_model_fits
from allbatch.model.manifest import load_model_artifact, manifest_path_for, sha256_of_file
from allbatch.run.config import RunConfig
from allbatch.run.engine import run

PROBE = """
import sys
from allbatch.cli.app import main
sys.argv = ["allbatch", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    print(exc.code, [m for m in ("onnxruntime", "torch", "cupy", "nvidia.dali", "tensorrt") if m in sys.modules])
"""


def refuse(*args: str) -> tuple[str, str]:
    """Run the CLI in a subprocess; return (stderr, which runtimes it imported); asserts exit 1, one line."""
    env = {**os.environ, "COLUMNS": "40"}
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=120)
    code, loaded = result.stdout.strip().split(" ", 1)
    assert code == "1", result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0], loaded


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def slides(tmp_path: Path) -> Path:
    root = tmp_path / "slides"
    write_good_images(root, 3)
    return root


@pytest.mark.parametrize("flags", [[], ["--overwrite"], ["--resume"]])
def test_out_naming_a_folder_is_refused_early(tmp_path: Path, slides: Path, flags: list[str]) -> None:
    folder = tmp_path / "outdir"
    folder.mkdir()
    line, loaded = refuse("run", str(slides), "--out", str(folder), "--model", str(tmp_path / "absent.onnx"), *flags)
    assert "is a folder" in line and "results.h5" in line
    assert loaded == "[]"
    assert hidden(tmp_path) == [] and list(folder.iterdir()) == []


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_a_file_that_is_not_a_results_file_is_never_replaced(tmp_path: Path, slides: Path, flag: str) -> None:
    csv = tmp_path / "r.csv"
    csv.write_text("path,label\na.jpg,Benign\n")
    line, loaded = refuse("run", str(slides), "--out", str(csv), "--model", str(tmp_path / "absent.onnx"), flag)
    assert "not an allbatch results file" in line and loaded == "[]"
    assert csv.read_text() == "path,label\na.jpg,Benign\n"
    assert hidden(tmp_path) == []


def test_existing_output_and_lock_are_reported_before_the_model_loads(tmp_path: Path, slides: Path) -> None:
    out = tmp_path / "r.h5"
    out.write_bytes(b"")
    line, loaded = refuse("run", str(slides), "--out", str(out), "--model", str(tmp_path / "absent.onnx"))
    assert "already exists" in line and loaded == "[]"  # the output, not the (missing) model

    out.unlink()
    lock = tmp_path / ".r.h5.allbatch-lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running writer holds it
        line, loaded = refuse("run", str(slides), "--out", str(out), "--model", str(tmp_path / "absent.onnx"))
        assert "another allbatch run is writing" in line and loaded == "[]"
    finally:
        os.close(fd)
    assert not out.exists()


def test_an_empty_source_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    out = tmp_path / "r.h5"
    line, loaded = refuse("run", str(empty), "--out", str(out))
    assert "no images found under" in line and "nothing written" in line and loaded == "[]"
    assert not out.exists() and hidden(tmp_path) == []


def _variant(
    tiny_model: Path,
    folder: Path,
    name: str,
    manifest_edit: Callable[[dict[str, Any]], None] | None = None,
    graph_edit: Callable[[onnx.ModelProto], None] | None = None,
) -> Path:
    """A copy of the tiny model with its graph and/or manifest changed and the manifest's sha256 made
    to match (the artifact is consistent, it just does not fit allbatch)."""
    model = onnx.load(str(tiny_model))
    if graph_edit is not None:
        graph_edit(model)
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    manifest = json.loads(manifest_path_for(tiny_model).read_text())
    if manifest_edit is not None:
        manifest_edit(manifest)
    manifest["onnx_sha256"] = sha256_of_file(path)
    manifest_path_for(path).write_text(json.dumps(manifest))
    return path


def _set_dims(value: Any, dims: dict[int, int]) -> None:
    for index, size in dims.items():
        value.type.tensor_type.shape.dim[index].dim_value = size


BAD_MODELS: dict[str, tuple[Any, Any, str]] = {
    "input_112": (None, lambda m: _set_dims(m.graph.input[0], {3: 112, 4: 112}), "allbatch feeds float32 (N, 2, 3, 224, 224)"),
    "output_3": (None, lambda m: _set_dims(m.graph.output[0], {1: 3}), "allbatch reads float32 (N, 4)"),
    "std_0": (lambda d: d["preprocessing"].update(std=0.0), None, "std 0.0"),
    "size_112": (lambda d: d["preprocessing"].update(size=112), None, "is not [N, 2, 3, 112, 112]"),
    "unknown_field": (lambda d: d["preprocessing"].update(gamma=2.2), None, "unusable preprocessing"),
    "input_name": (lambda d: d.update(input_name="x"), None, "differ from the manifest's ['x']"),
}


@pytest.mark.parametrize("name", sorted(BAD_MODELS))
def test_a_model_that_does_not_fit_is_refused_before_anything_is_written(tmp_path: Path, slides: Path, tiny_model: Path, name: str) -> None:
    manifest_edit, graph_edit, message = BAD_MODELS[name]
    bad = _variant(tiny_model, tmp_path, name, manifest_edit, graph_edit)
    artifact = load_model_artifact(bad)
    with pytest.raises(ModelError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        check_model_fits(artifact)
    out = tmp_path / "r.h5"
    with pytest.raises(ModelError):
        run(RunConfig(source=slides, output=out, model=bad, backend="onnxruntime", decoder="cpu"))
    assert not out.exists() and hidden(tmp_path) == []


def test_the_cli_refuses_a_bad_model_in_one_line_without_loading_a_runtime(tmp_path: Path, slides: Path, tiny_model: Path) -> None:
    bad = _variant(tiny_model, tmp_path, "out3", graph_edit=lambda m: _set_dims(m.graph.output[0], {1: 3}))
    out = tmp_path / "r.h5"
    line, loaded = refuse("run", str(slides), "--out", str(out), "--model", str(bad))
    assert "output 'probs' is (N, 3)" in line and loaded == "[]"
    assert not out.exists() and hidden(tmp_path) == []


def test_the_shipped_and_tiny_models_fit(tiny_model: Path) -> None:
    check_model_fits(load_model_artifact(tiny_model))
    check_model_fits(load_model_artifact())
