"""The qc stage inside a real run (tiny model, CPU path): /qc datasets, flags from manifest statistics,
predictions identical with and without statistics, no row dropped, folder verdicts stored and shown."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from image_factory import encode, smear_like
from typer.testing import CliRunner

from allbatch import CLASS_NAMES
from allbatch.cli import app as cli_app
from allbatch.model.manifest import load_model_artifact, manifest_path_for
from allbatch.qc.flags import QcFlag
from allbatch.qc.schema import QC_COLUMNS
from allbatch.summarize.groups_h5 import read_groups
from factory.qc_collect import collect
from factory.qc_fit import fit_qc

runner = CliRunner()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two slides of 8 smear-like images, a grey picture, a 32 x 32 crop and a file that is no image."""
    root = tmp_path_factory.mktemp("archive")
    for slide, offset in (("slide 1", 0), ("slide 2", 100)):
        (root / slide).mkdir()
        for i in range(8):
            (root / slide / f"img{i:02d}.jpg").write_bytes(encode(smear_like(offset + i), "JPEG", quality=92))
    odd = root / "odd"
    odd.mkdir()
    (odd / "grey.jpg").write_bytes(encode(np.full((224, 224, 3), 128, np.uint8), "JPEG"))
    (odd / "tiny.png").write_bytes(encode(smear_like(7, (32, 32)), "PNG"))
    (odd / "notes.jpg").write_bytes(b"not an image at all")
    return root


@pytest.fixture(scope="module")
def model_with_stats(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny model whose manifest carries qc statistics fitted on 24 other smear-like images."""
    folder = tmp_path_factory.mktemp("qc_model")
    onnx = folder / "tiny.onnx"
    shutil.copyfile(tiny_model, onnx)
    shutil.copyfile(manifest_path_for(tiny_model), manifest_path_for(onnx))
    artifact = load_model_artifact(onnx)
    items = [(f"train/{i}.jpg", encode(smear_like(1000 + i), "JPEG", quality=92)) for i in range(24)]
    collected = collect(items, artifact, batch_size=8, threads=1)
    labels = np.arange(24) % len(CLASS_NAMES)
    qc = fit_qc(collected, labels, len(CLASS_NAMES), {"part": "synthetic"}, k=8)
    data = json.loads(manifest_path_for(onnx).read_text(encoding="utf-8"))
    data["qc"] = qc
    manifest_path_for(onnx).write_text(json.dumps(data), encoding="utf-8")
    return onnx


def _run(root: Path, out: Path, model: Path, *extra: str) -> str:
    cli_app._register()
    args = ["run", str(root), "--out", str(out), "--model", str(model), "--backend", "onnxruntime", "--decoder", "cpu", *extra]
    result = runner.invoke(cli_app.app, args)
    assert result.exit_code == 3, result.output  # notes.jpg failed
    return result.output


def test_qc_flags_odd_inputs_and_never_changes_a_prediction(
    archive: Path, tiny_model: Path, model_with_stats: Path, tmp_path: Path
) -> None:
    plain, checked = tmp_path / "plain.h5", tmp_path / "checked.h5"
    _run(archive, plain, tiny_model, "-b", "5")
    output = _run(archive, checked, model_with_stats, "-b", "5", "--json")
    with h5py.File(plain, "r") as a, h5py.File(checked, "r") as b:
        n = int(b["meta/n_committed"][0])
        assert n == int(a["meta/n_committed"][0]) == 19  # every file has its row, the failed one too
        np.testing.assert_array_equal(a["pred/probs"][:], b["pred/probs"][:])
        np.testing.assert_array_equal(a["pred/label"][:], b["pred/label"][:])
        for column in QC_COLUMNS:
            assert b[column.name].shape == (n, *column.row_shape)
        assert b["qc/flags"].attrs["bits"].startswith("0=blurred")
        paths = [p.decode() for p in b["images/path"][:]]
        flags = dict(zip(paths, b["qc/flags"][:].tolist(), strict=True))
        sizes = dict(zip(paths, b["qc/size"][:].tolist(), strict=True))
        distance = b["qc/distance"][:]
        assert not a["qc/flags"][:].any()  # no statistics in the plain model: measured, never flagged
        ok = b["images/status"][:] == 0
        assert np.isnan(a["qc/distance"][:]).all() and not np.isnan(distance[ok]).any() and np.isnan(distance[~ok]).all()
    assert flags["odd/tiny.png"] & QcFlag.SMALL and sizes["odd/tiny.png"] == [32, 32]
    assert flags["odd/grey.jpg"] & QcFlag.BLURRED and flags["odd/grey.jpg"] & QcFlag.COLOUR
    assert flags["odd/notes.jpg"] == 0 and sizes["odd/notes.jpg"] == [0, 0]  # failed: its status says why
    summary = json.loads(output[output.index("{") :])
    assert sum(summary["verdicts"].values()) == 3 and summary["verdicts"]["insufficient"] >= 1  # "odd": 2 images, both flagged
    # images that are not smears (small, blurred or off-colour) are counted apart, never in a class total
    junk = sum(1 for value in flags.values() if value & (QcFlag.SMALL | QcFlag.BLURRED | QcFlag.COLOUR))
    assert summary["not_a_smear"] == junk >= 2  # the grey picture and the 32-px crop at least
    assert sum(summary["class_counts"].values()) + junk == summary["ok"] == 18
    assert f"not a smear {junk}" in " ".join(output.split())


def test_folder_verdicts_are_stored_exported_and_printed(archive: Path, model_with_stats: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    printed = _run(archive, out, model_with_stats, "--group-by", "parent")
    stored = read_groups(out)
    assert stored is not None and stored["name"] == ["odd", "slide 1", "slide 2"]
    counts = np.asarray(stored["counts"])
    assert counts[:, 0].tolist() == [3, 8, 8] and counts[0, 2] == 1  # images; the failed file of "odd"
    assert "Per folder" in printed and "slide 1" in printed
    target = tmp_path / "groups.csv"
    result = runner.invoke(cli_app.app, ["export", str(out), "--groups", str(target)])
    assert result.exit_code == 0, result.output
    with target.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["folder"] for r in rows] == ["odd", "slide 1", "slide 2"]
    assert [r["verdict"] for r in rows] == stored["verdict"] and stored["verdict"][0] == "insufficient"
    assert all(int(r["usable"]) == int(r["ok"]) - int(r["flagged"]) for r in rows)
    assert rows[0]["not_a_smear"] == "2" and stored["not_a_smear"][0] == 2  # the grey picture and the 32-px crop


def test_input_measures_taken_while_preparing_give_the_same_columns_in_every_chunk(archive: Path, model_with_stats: Path) -> None:
    """The producer takes the input measures (PreparedBatch.input_measures); chunks of the batch carry their
    slice of them, and the /qc columns equal those the qc stage computes itself from the inputs."""
    from allbatch.backends.select import create_backend
    from allbatch.core.records import EncodedImage
    from allbatch.prepare.cpu import PillowPreparer
    from allbatch.qc.stage import QcStage
    from allbatch.run.engine import slice_batch

    artifact = load_model_artifact(model_with_stats)
    files = [*sorted((archive / "slide 1").glob("*.jpg"))[:5], archive / "odd" / "notes.jpg", archive / "odd" / "grey.jpg"]
    images = [EncodedImage(i, path.name, path.read_bytes(), "") for i, path in enumerate(files)]
    preparer = PillowPreparer(artifact.manifest.prep, artifact.manifest.seg, threads=1)
    try:
        batch = preparer.prepare(images)
    finally:
        preparer.close()
    stage = QcStage(artifact.manifest)
    assert batch.input_measures is None
    measured = slice_batch(batch, 0, len(images))
    measured.input_measures = stage.measure_inputs(batch.inputs)
    with create_backend("onnxruntime", artifact, max_batch=8) as backend:
        for start, stop in ((0, 3), (3, 7)):  # the failed file sits in the second chunk
            plain, early = slice_batch(batch, start, stop), slice_batch(measured, start, stop)
            assert early.input_measures is not None and len(early.input_measures["blur"]) == len(early.ok_positions)
            output = backend.infer(plain.inputs)
            expected, got = stage(plain, output), stage(early, output)
            assert set(got) == set(expected)
            for key in expected:
                np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


class _DeviceColumn:
    """A stand-in for a CuPy array (the boundary we cannot run here): ``get`` is a device-to-host copy, counted."""

    copies = 0

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.dtype, self.shape, self.size = values.dtype, values.shape, values.size

    def astype(self, dtype: object) -> np.ndarray:
        return self.values.astype(dtype)

    def get(self) -> np.ndarray:
        _DeviceColumn.copies += 1
        return self.values.copy()


def test_qc_columns_come_to_the_host_in_one_copy_and_exactly() -> None:
    from allbatch.qc.stage import to_host_once

    rng = np.random.default_rng(5)
    columns = {
        "blur": rng.random(7, dtype=np.float32) * 1e4,
        "colour": np.where(rng.random((7, 4)) < 0.2, np.nan, rng.random((7, 4))).astype(np.float32),
        "components": rng.integers(-(2**31), 2**31 - 1, 7, dtype=np.int32),
        "flags": rng.integers(0, 2**16, 7, dtype=np.uint16),
        "big": np.array([2**62 + 1] * 7, dtype=np.int64),  # a float64 would round it: copied on its own
        "host": np.arange(7, dtype=np.float32),
    }
    device = {key: value if key == "host" else _DeviceColumn(value) for key, value in columns.items()}
    _DeviceColumn.copies = 0
    host = to_host_once(device)
    assert _DeviceColumn.copies == 1  # only the int64 column; the others travel in one joined copy
    assert list(host) == list(columns)
    for key, value in columns.items():
        assert host[key].dtype == value.dtype and host[key].shape == value.shape
        np.testing.assert_array_equal(host[key], value)  # NaN positions included
