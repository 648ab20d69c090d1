"""The TensorRT engine key and cache, without TensorRT: the build and deserialise steps (the TensorRT boundary)
are injected as plain functions, everything else (digest, files, sidecar, refusal and rebuild) is the real code."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from allbatch.backends.trt_engine import (
    EngineKey,
    default_cache_dir,
    engine_paths,
    load_or_build_engine,
    read_sidecar,
    record_fp16_agreement,
    timing_cache_path,
)
from allbatch.core.errors import ModelError
from allbatch.model.manifest import ModelArtifact, load_model_artifact

KEY = EngineKey(
    onnx_sha256="a" * 64,
    tensorrt_version="10.13.0.35",
    gpu_name="NVIDIA H100 80GB HBM3",
    compute_capability="9.0",
    precision="fp16",
    min_batch=1,
    opt_batch=256,
    max_batch=256,
)
GOLDEN_DIGEST = "aa7bb52e4164995269d62f48"
"""KEY's digest when this test was written: a change means every cached engine is rebuilt (bump KEY_FORMAT on purpose)."""


@pytest.fixture(scope="module")
def artifact() -> ModelArtifact:
    """The committed model (only its path, sha256 and input name are used here)."""
    return load_model_artifact()


@pytest.fixture()
def key(artifact: ModelArtifact) -> EngineKey:
    return dataclasses.replace(KEY, onnx_sha256=artifact.sha256)


class FakeBuilder:
    """Stands in for ``engine_from_onnx``: returns bytes that depend on the key, counts calls, and writes the
    timing cache file like the real builder does."""

    def __init__(self) -> None:
        self.calls: list[EngineKey] = []

    def __call__(self, onnx_path: Path, key: EngineKey, timing_cache: Path | None) -> bytes:
        assert onnx_path.is_file()
        self.calls.append(key)
        if timing_cache is not None:
            timing_cache.write_bytes(b"timing")
        return b"fake-engine:" + key.digest().encode() + bytes(range(256))


# -- the key ---------------------------------------------------------------------------------------


def test_digest_is_stable() -> None:
    assert KEY.digest() == GOLDEN_DIGEST
    assert EngineKey(**KEY.to_dict()).digest() == GOLDEN_DIGEST
    assert len(GOLDEN_DIGEST) == 24 and all(ch in "0123456789abcdef" for ch in GOLDEN_DIGEST)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("onnx_sha256", "b" * 64),
        ("tensorrt_version", "10.13.0.36"),
        ("gpu_name", "NVIDIA H200"),
        ("compute_capability", "8.9"),
        ("precision", "fp32"),
        ("min_batch", 2),
        ("opt_batch", 128),
        ("max_batch", 512),
    ],
)
def test_digest_changes_with_every_field(field: str, value: Any) -> None:
    changed = dataclasses.replace(KEY, **{field: value})
    assert changed.digest() != KEY.digest()
    assert engine_paths(Path("c"), changed) != engine_paths(Path("c"), KEY)


def test_key_round_trip_and_validation() -> None:
    assert EngineKey.from_dict(json.loads(json.dumps(KEY.to_dict()))) == KEY
    with pytest.raises(ValueError, match="precision"):
        dataclasses.replace(KEY, precision="int8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min <= opt <= max"):
        dataclasses.replace(KEY, opt_batch=512)
    with pytest.raises(KeyError):
        EngineKey.from_dict({"precision": "fp16"})


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ALLBATCH_CACHE", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache" / "engines"
    monkeypatch.delenv("ALLBATCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "allbatch" / "engines"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "allbatch" / "engines"


def test_timing_cache_name_is_per_version_and_gpu(tmp_path: Path) -> None:
    path = timing_cache_path(tmp_path, KEY)
    assert path.parent == tmp_path and path.name == "timing-trt10.13.0.35-nvidia-h100-80gb-hbm3-sm9.0.cache"
    assert timing_cache_path(tmp_path, dataclasses.replace(KEY, precision="fp32", max_batch=512)) == path
    assert timing_cache_path(tmp_path, dataclasses.replace(KEY, gpu_name="NVIDIA H200")) != path


# -- the cache -------------------------------------------------------------------------------------


def test_build_then_reuse(artifact: ModelArtifact, key: EngineKey, tmp_path: Path) -> None:
    build = FakeBuilder()
    first = load_or_build_engine(artifact, key, tmp_path, build=build)
    assert len(build.calls) == 1
    engine, sidecar = engine_paths(tmp_path, key)
    assert engine.read_bytes() == first
    meta = json.loads(sidecar.read_text())
    assert meta["key"] == key.to_dict() and meta["digest"] == key.digest()
    assert meta["engine_sha256"] == hashlib.sha256(first).hexdigest() and meta["engine_bytes"] == len(first)
    assert timing_cache_path(tmp_path, key).read_bytes() == b"timing"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([engine.name, sidecar.name, timing_cache_path(tmp_path, key).name])

    validated: list[bytes] = []

    def validate(data: bytes) -> bool:
        validated.append(data)
        return True

    again = load_or_build_engine(artifact, key, tmp_path, build=build, validate=validate)
    assert again == first and len(build.calls) == 1, "an intact cached engine must be reused, not rebuilt"
    assert validated == [first]


def test_other_key_gets_its_own_engine(artifact: ModelArtifact, key: EngineKey, tmp_path: Path) -> None:
    build = FakeBuilder()
    fp16 = load_or_build_engine(artifact, key, tmp_path, build=build)
    fp32_key = dataclasses.replace(key, precision="fp32")
    fp32 = load_or_build_engine(artifact, fp32_key, tmp_path, build=build)
    assert build.calls == [key, fp32_key] and fp16 != fp32
    assert len(list(tmp_path.glob("*.engine"))) == 2


def _rebuilt_after(
    damage: str, artifact: ModelArtifact, key: EngineKey, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> tuple[FakeBuilder, bytes]:
    build = FakeBuilder()
    original = load_or_build_engine(artifact, key, tmp_path, build=build)
    engine, sidecar = engine_paths(tmp_path, key)
    if damage == "engine bytes":
        engine.write_bytes(original[:-10] + b"0123456789")  # same size, other content
    elif damage == "truncated engine":
        engine.write_bytes(original[:20])
    elif damage == "sidecar missing":
        sidecar.unlink()
    elif damage == "sidecar garbage":
        sidecar.write_text("{not json")
    elif damage == "sidecar other key":
        meta = json.loads(sidecar.read_text())
        meta["key"]["max_batch"] = 512
        sidecar.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="allbatch.backends"):
        rebuilt = load_or_build_engine(artifact, key, tmp_path, build=build)
    assert len(build.calls) == 2, f"{damage}: the cached engine must be refused and rebuilt"
    assert any("refused" in record.getMessage() and "rebuilding" in record.getMessage() for record in caplog.records)
    assert rebuilt == original == engine.read_bytes()
    assert json.loads(sidecar.read_text())["engine_sha256"] == hashlib.sha256(rebuilt).hexdigest()
    return build, rebuilt


@pytest.mark.parametrize("damage", ["engine bytes", "truncated engine", "sidecar missing", "sidecar garbage"])
def test_corrupt_cache_is_rebuilt(
    damage: str, artifact: ModelArtifact, key: EngineKey, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _rebuilt_after(damage, artifact, key, tmp_path, caplog)


def test_mismatched_key_is_not_reused(artifact: ModelArtifact, key: EngineKey, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _rebuilt_after("sidecar other key", artifact, key, tmp_path, caplog)
    assert any("another key (differs in max_batch)" in record.getMessage() for record in caplog.records)


def test_engine_that_does_not_deserialise_is_rebuilt(
    artifact: ModelArtifact, key: EngineKey, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    build = FakeBuilder()
    load_or_build_engine(artifact, key, tmp_path, build=build)
    answers = iter([False, True])  # the cached engine fails (e.g. another TensorRT build), the fresh one works
    with caplog.at_level(logging.WARNING, logger="allbatch.backends"):
        load_or_build_engine(artifact, key, tmp_path, build=build, validate=lambda data: next(answers))
    assert len(build.calls) == 2
    assert any("cannot deserialise" in record.getMessage() for record in caplog.records)


def test_fresh_engine_that_does_not_deserialise_is_an_error(artifact: ModelArtifact, key: EngineKey, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="cannot deserialise"):
        load_or_build_engine(artifact, key, tmp_path, build=FakeBuilder(), validate=lambda data: False)
    engine, sidecar = engine_paths(tmp_path, key)
    assert not engine.exists() and not sidecar.exists()


def test_key_for_another_model_is_refused(artifact: ModelArtifact, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="engine key is for onnx"):
        load_or_build_engine(artifact, KEY, tmp_path, build=FakeBuilder())


def test_failed_build_leaves_no_files(artifact: ModelArtifact, key: EngineKey, tmp_path: Path) -> None:
    def failing(onnx_path: Path, build_key: EngineKey, timing: Path | None) -> bytes:
        raise ModelError("TensorRT cannot parse it")

    with pytest.raises(ModelError):
        load_or_build_engine(artifact, key, tmp_path, build=failing)
    assert list(tmp_path.iterdir()) == []


def test_fp16_figures_go_into_the_sidecar(artifact: ModelArtifact, key: EngineKey, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="sidecar"):
        record_fp16_agreement(tmp_path, key, {"argmax_agreement": 1.0})
    build = FakeBuilder()
    data = load_or_build_engine(artifact, key, tmp_path, build=build)
    figures = {"argmax_agreement": 1.0, "max_abs_prob_diff": 0.001, "n": 8, "accepted": True}
    record_fp16_agreement(tmp_path, key, figures)
    meta = read_sidecar(tmp_path, key)
    assert meta is not None and meta["fp16_agreement"] == figures
    # The figures do not invalidate the cached engine.
    assert load_or_build_engine(artifact, key, tmp_path, build=build) == data and len(build.calls) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
