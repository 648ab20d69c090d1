"""``engine_from_onnx`` against a stand-in ``tensorrt`` module (the boundary that cannot run here): which
TensorRT 10 calls it makes, with which shapes and flags, and how it reports failures. The network the fake
parser returns is read from the real ONNX file with ``onnx``."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import onnx
import pytest

from allbatch.backends.trt_engine import EngineKey, engine_device_memory_bytes, engine_from_onnx, tensorrt_logger
from allbatch.core.errors import BackendUnavailableError, ModelError
from allbatch.model.manifest import DEFAULT_MODEL, sha256_of_file


class Flag:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def make_fake_tensorrt(
    *, weak_typing: bool = True, parse_ok: bool = True, build_ok: bool = True
) -> tuple[types.ModuleType, dict[str, Any]]:
    """A module with the TensorRT 10 names ``engine_from_onnx`` uses; ``calls`` records what it was asked."""
    calls: dict[str, Any] = {"flags": [], "cleared": [], "pools": {}, "profiles": []}
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.13.0.35" if weak_typing else "11.0.0.1"  # type: ignore[attr-defined]

    class Severity:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    class ILogger:
        pass

    process_logger: list[ILogger] = []  # TensorRT keeps the first logger it is given for the whole process

    def register(logger: ILogger) -> ILogger:
        if not process_logger:
            process_logger.append(logger)
        return process_logger[0]

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            self.logger = register(logger)

    ILogger.Severity = Severity  # type: ignore[attr-defined]

    class Tensor:
        def __init__(self, name: str, shape: tuple[int, ...]) -> None:
            self.name, self.shape = name, shape

    class Network:
        def __init__(self) -> None:
            self.inputs: list[Tensor] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: ILogger) -> None:
            self.network, self.logger = network, logger
            self.num_errors = 0

        def parse(self, data: bytes, path: str) -> bool:
            calls["parsed"] = (len(data), path)
            if not parse_ok:
                self.num_errors = 1
                return False
            graph = onnx.load_from_string(data).graph
            for value in graph.input:
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim)
                self.network.inputs.append(Tensor(value.name, dims))
            return True

        def get_error(self, i: int) -> str:
            return "ErrorCode 8: unsupported operator Foo (node 3)"

    class Profile:
        def set_shape(self, name: str, low: tuple[int, ...], opt: tuple[int, ...], high: tuple[int, ...]) -> None:
            calls["profiles"].append((name, low, opt, high))

    class TimingCache:
        def __init__(self, blob: bytes) -> None:
            self.blob = blob

        def serialize(self) -> bytes:
            return self.blob + b"+timed"

    class Config:
        cache: TimingCache | None = None

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            calls["pools"][pool] = size

        def set_flag(self, flag: Flag) -> None:
            calls["flags"].append(flag.name)

        def clear_flag(self, flag: Flag) -> None:
            calls["cleared"].append(flag.name)

        def add_optimization_profile(self, profile: Profile) -> int:
            calls["profile_added"] = True
            return 0

        def create_timing_cache(self, blob: bytes) -> TimingCache:
            calls["timing_loaded"] = blob
            return TimingCache(blob)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.cache = cache
            return True

        def get_timing_cache(self) -> TimingCache:
            assert self.cache is not None
            return self.cache

    class Builder:
        def __init__(self, logger: ILogger) -> None:
            self.logger = register(logger)  # messages go to the process's logger, not necessarily this one

        def create_network(self, flags: int = 0) -> Network:
            calls["network_flags"] = flags
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            if not build_ok:
                self.logger.log(Severity.ERROR, "out of memory while timing tactics")  # type: ignore[attr-defined]
                return None
            return b"serialized-engine"

    names = ["FP16", "TF32"] if weak_typing else ["TF32"]
    trt.BuilderFlag = types.SimpleNamespace(**{name: Flag(name) for name in names})  # type: ignore[attr-defined]
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")  # type: ignore[attr-defined]
    trt.Dims = tuple  # type: ignore[attr-defined]
    for cls in (ILogger, Builder, OnnxParser, Runtime):
        setattr(trt, cls.__name__, cls)
    return trt, calls


@pytest.fixture()
def key() -> EngineKey:
    return EngineKey(sha256_of_file(DEFAULT_MODEL), "10.13.0.35", "NVIDIA H100", "9.0", "fp16", 1, 32, 64)


def test_fp16_build(monkeypatch: pytest.MonkeyPatch, key: EngineKey, tmp_path: Path) -> None:
    trt, calls = make_fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    timing = tmp_path / "timing.cache"
    timing.write_bytes(b"earlier")
    data = engine_from_onnx(DEFAULT_MODEL, key, timing, workspace_bytes=1 << 30)
    assert data == b"serialized-engine"
    assert calls["parsed"] == (DEFAULT_MODEL.stat().st_size, str(DEFAULT_MODEL))
    assert calls["network_flags"] == 0  # explicit batch is TensorRT 10's only mode
    assert calls["profiles"] == [("images", (1, 2, 3, 224, 224), (32, 2, 3, 224, 224), (64, 2, 3, 224, 224))]
    assert calls["profile_added"] is True
    assert calls["flags"] == ["FP16"] and calls["cleared"] == []
    assert calls["pools"] == {"WORKSPACE": 1 << 30}
    assert calls["timing_loaded"] == b"earlier" and timing.read_bytes() == b"earlier+timed"


def test_fp32_build_clears_tf32_and_starts_a_timing_cache(monkeypatch: pytest.MonkeyPatch, key: EngineKey, tmp_path: Path) -> None:
    trt, calls = make_fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    timing = tmp_path / "sub" / "timing.cache"
    engine_from_onnx(DEFAULT_MODEL, EngineKey(**{**key.to_dict(), "precision": "fp32"}), timing)
    assert calls["flags"] == [] and calls["cleared"] == ["TF32"]
    assert calls["timing_loaded"] == b"" and timing.read_bytes() == b"+timed"


def test_parse_errors_are_reported(monkeypatch: pytest.MonkeyPatch, key: EngineKey) -> None:
    trt, _ = make_fake_tensorrt(parse_ok=False)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    with pytest.raises(ModelError, match=r"TensorRT cannot parse .*unsupported operator Foo \(node 3\)"):
        engine_from_onnx(DEFAULT_MODEL, key, None)


def test_wrong_input_name_is_a_model_error(monkeypatch: pytest.MonkeyPatch, key: EngineKey) -> None:
    trt, _ = make_fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    with pytest.raises(ModelError, match=r"network inputs \['images'\], expected \['pixels'\]"):
        engine_from_onnx(DEFAULT_MODEL, key, None, input_name="pixels")


def test_build_failure_carries_tensorrt_errors(monkeypatch: pytest.MonkeyPatch, key: EngineKey, tmp_path: Path) -> None:
    trt, _ = make_fake_tensorrt(build_ok=False)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    with pytest.raises(RuntimeError, match="out of memory while timing tactics"):
        engine_from_onnx(DEFAULT_MODEL, key, tmp_path / "timing.cache")
    assert not (tmp_path / "timing.cache").exists()


def test_fp16_on_tensorrt_11_is_refused_clearly(monkeypatch: pytest.MonkeyPatch, key: EngineKey) -> None:
    trt, _ = make_fake_tensorrt(weak_typing=False)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    with pytest.raises(BackendUnavailableError, match=r"TensorRT 11.0.0.1 has no BuilderFlag.FP16 .*--precision fp32"):
        engine_from_onnx(DEFAULT_MODEL, key, None)


def test_build_errors_reach_the_logger_when_a_runtime_came_first(monkeypatch: pytest.MonkeyPatch, key: EngineKey) -> None:
    """The backend creates its Runtime before the build; TensorRT then sends the build's messages to the
    Runtime's logger, so the build must use that same (process-wide) logger to report them."""
    trt, _ = make_fake_tensorrt(build_ok=False)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    trt.Runtime(tensorrt_logger())  # type: ignore[attr-defined]
    assert tensorrt_logger() is tensorrt_logger()
    tensorrt_logger().log(trt.ILogger.Severity.ERROR, "an earlier, unrelated error")  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="out of memory while timing tactics") as failure:
        engine_from_onnx(DEFAULT_MODEL, key, None)
    assert "unrelated" not in str(failure.value)


@pytest.mark.parametrize(
    ("engine", "size"),
    [
        (types.SimpleNamespace(device_memory_size_v2=123, device_memory_size=99), 123),  # TensorRT >= 10.1
        (types.SimpleNamespace(device_memory_size_v2=123), 123),  # TensorRT 11: v1 removed
        (types.SimpleNamespace(device_memory_size=99), 99),  # TensorRT 10.0: no v2 yet
    ],
)
def test_engine_device_memory_on_every_tensorrt_10_and_11(engine: Any, size: int) -> None:
    assert engine_device_memory_bytes(engine) == size
