"""Backend and decoder selection: what this machine reports, what auto picks, and explicit choices that fail."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from allbatch.backends.openvino_backend import OpenVinoBackend
from allbatch.backends.ort_backend import OnnxRuntimeBackend
from allbatch.backends.select import (
    BACKEND_NAMES,
    DECODER_NAMES,
    backend_availability,
    choose_backend,
    create_backend,
    decoder_availability,
    resolve_decoder,
)
from allbatch.core.errors import BackendUnavailableError, UserInputError
from allbatch.model.manifest import ModelArtifact, load_model_artifact


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


CUDA = _has_cuda()
OPENVINO = backend_availability()["openvino"][0]
no_cuda_only = pytest.mark.skipif(CUDA, reason="checks the behaviour of a machine without CUDA")


@pytest.fixture(scope="module")
def artifact(tiny_model: Path) -> ModelArtifact:
    return load_model_artifact(tiny_model)


@pytest.fixture
def backend_log() -> Iterator[list[logging.LogRecord]]:
    """Records of the allbatch.backends logger (caught on the logger itself: the CLI turns propagation off)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("allbatch.backends")
    handler, level = Collect(level=logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_names() -> None:
    assert BACKEND_NAMES == ("auto", "onnxruntime", "openvino", "torch", "tensorrt")
    assert DECODER_NAMES == ("auto", "cpu", "dali", "dali-cpu")


def test_backend_availability_reports_every_backend_with_a_reason() -> None:
    import onnxruntime

    availability = backend_availability()
    assert set(availability) == {"onnxruntime", "openvino", "torch", "tensorrt"}
    for usable, reason in availability.values():
        assert isinstance(usable, bool) and reason
    assert availability["onnxruntime"] == (True, availability["onnxruntime"][1])
    assert f"onnxruntime {onnxruntime.__version__} on CPU" in availability["onnxruntime"][1]
    if not CUDA:
        assert availability["torch"][0] is False and "CUDA" in availability["torch"][1]
        assert availability["tensorrt"][0] is False


@no_cuda_only
def test_auto_picks_the_fastest_cpu_backend_here_and_logs_why(artifact: ModelArtifact, backend_log: list[logging.LogRecord]) -> None:
    backend = create_backend("auto", artifact, max_batch=8)
    messages = [record.getMessage() for record in backend_log]
    if OPENVINO:
        assert isinstance(backend, OpenVinoBackend)
        assert backend.requested_precision == "auto"  # the default fp16 means "reduced precision where native"
        assert any(m.startswith("backend openvino (auto): openvino") and "fastest CPU backend" in m for m in messages), messages
    else:
        assert isinstance(backend, OnnxRuntimeBackend)
        assert any(m.startswith("backend onnxruntime (auto): onnxruntime") for m in messages), messages
        assert any("openvino skipped: openvino not installed" in m for m in messages), messages
    assert any("tensorrt skipped" in m for m in messages) and any("torch skipped" in m for m in messages)


def test_bf16_is_for_openvino_only(artifact: ModelArtifact) -> None:
    table = {**GPU_MACHINE}
    assert choose_backend("onnxruntime", table.__getitem__)[0] == "onnxruntime"
    with pytest.raises(UserInputError, match="precision bf16 applies to the openvino backend only, not onnxruntime"):
        create_backend("onnxruntime", artifact, max_batch=8, precision="bf16")


def test_explicit_onnxruntime_is_served(artifact: ModelArtifact) -> None:
    assert isinstance(create_backend("onnxruntime", artifact, max_batch=8, precision="fp32"), OnnxRuntimeBackend)


@no_cuda_only
def test_explicit_tensorrt_is_unavailable_here(artifact: ModelArtifact) -> None:
    with pytest.raises(BackendUnavailableError, match="backend tensorrt is not available: "):
        create_backend("tensorrt", artifact, max_batch=8)


@no_cuda_only
def test_explicit_torch_is_unavailable_here_because_of_cuda(artifact: ModelArtifact) -> None:
    with pytest.raises(BackendUnavailableError, match=r"backend torch is not available: .*CUDA"):
        create_backend("torch", artifact, max_batch=8)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": "openvivo"}, "unknown backend 'openvivo'"),
        ({"name": "onnxruntime", "precision": "fp8"}, "unknown precision 'fp8'"),
        ({"name": "auto", "precision": "int8"}, "unknown precision 'int8'"),
        ({"name": "auto", "max_batch": 0}, "max_batch must be at least 1"),
    ],
)
def test_bad_arguments_are_user_errors(artifact: ModelArtifact, kwargs: dict[str, object], error: str) -> None:
    arguments: dict[str, object] = {"max_batch": 8, **kwargs}
    with pytest.raises(UserInputError, match=error):
        create_backend(artifact=artifact, **arguments)  # type: ignore[arg-type]


# The selection order itself, on availability tables (a GPU machine's answers cannot be produced here).
GPU_MACHINE = {
    "tensorrt": (True, "tensorrt 10.x"),
    "torch": (True, "torch on CUDA"),
    "openvino": (True, "openvino on CPU"),
    "onnxruntime": (True, "onnxruntime on CPU"),
}


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (GPU_MACHINE, "tensorrt"),
        ({**GPU_MACHINE, "tensorrt": (False, "tensorrt not installed")}, "torch"),
        ({**GPU_MACHINE, "tensorrt": (False, "x"), "torch": (False, "y")}, "openvino"),
        ({**GPU_MACHINE, "tensorrt": (False, "x"), "torch": (False, "y"), "openvino": (False, "z")}, "onnxruntime"),
    ],
)
def test_auto_order(table: dict[str, tuple[bool, str]], expected: str) -> None:
    assert choose_backend("auto", table.__getitem__)[0] == expected


def test_auto_asks_only_as_far_as_needed() -> None:
    asked: list[str] = []

    def status(name: str) -> tuple[bool, str]:
        asked.append(name)
        return GPU_MACHINE[name]

    choose_backend("auto", status)
    assert asked == ["tensorrt"]


def test_nothing_usable_lists_every_reason() -> None:
    table = {name: (False, f"no {name}") for name in GPU_MACHINE}
    with pytest.raises(
        BackendUnavailableError, match="tensorrt: no tensorrt; torch: no torch; openvino: no openvino; onnxruntime: no onnxruntime"
    ):
        choose_backend("auto", table.__getitem__)


def test_explicit_choice_is_never_replaced() -> None:
    table = {**GPU_MACHINE, "torch": (False, "torch not installed")}
    with pytest.raises(BackendUnavailableError, match="backend torch is not available: torch not installed"):
        choose_backend("torch", table.__getitem__)
    assert choose_backend("onnxruntime", table.__getitem__) == ("onnxruntime", "onnxruntime on CPU")


# -- decoders -------------------------------------------------------------------------------------


def test_decoder_availability() -> None:
    import PIL

    available = decoder_availability()
    assert set(available) == {"cpu", "dali", "dali-cpu"}
    assert available["cpu"] == (True, f"Pillow {PIL.__version__} + NumPy")
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        assert available["dali-cpu"] == (False, "nvidia-dali not installed")
        assert available["dali"] == (False, "nvidia-dali not installed")
    else:
        assert available["dali-cpu"][0] is True
        if not CUDA:
            assert available["dali"][0] is False
            assert "no CUDA GPU" in available["dali"][1] or "cupy not installed" in available["dali"][1]


def test_dali_decoder_needs_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    """DALI without CuPy: the GPU preparer could not assemble, so `dali` is unusable and auto picks `cpu`."""
    pytest.importorskip("nvidia.dali", reason="checks a machine with DALI installed")
    monkeypatch.setitem(sys.modules, "cupy", None)  # None in sys.modules: `import cupy` raises ImportError
    available = decoder_availability()
    assert available["dali-cpu"][0] is True
    usable, reason = available["dali"]
    assert usable is False and "cupy not installed (pip install cupy-cuda13x)" in reason
    assert resolve_decoder("auto", for_backend="torch") == "cpu"
    with pytest.raises(BackendUnavailableError, match=r"decoder dali is not available: .*cupy not installed"):
        resolve_decoder("dali")


@no_cuda_only
def test_auto_decoder_is_cpu_without_a_gpu() -> None:
    assert resolve_decoder("auto") == "cpu"
    with pytest.raises(BackendUnavailableError, match="decoder dali is not available: "):
        resolve_decoder("dali")


def test_explicit_decoders() -> None:
    assert resolve_decoder("cpu") == "cpu"
    assert resolve_decoder("auto", for_backend="onnxruntime") == "cpu"
    assert resolve_decoder("auto", for_backend="openvino") == "cpu"
    if decoder_availability()["dali-cpu"][0]:
        assert resolve_decoder("dali-cpu") == "dali-cpu"
    with pytest.raises(UserInputError, match="unknown decoder 'nvjpeg'"):
        resolve_decoder("nvjpeg")


def test_openvino_is_a_core_dependency_on_x86_64_only() -> None:
    import tomllib

    from packaging.requirements import Requirement
    from paths import REPO

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    (openvino,) = [Requirement(line) for line in project["dependencies"] if line.startswith("openvino")]
    assert openvino.marker is not None
    assert openvino.marker.evaluate({"platform_machine": "x86_64"}) and openvino.marker.evaluate({"platform_machine": "AMD64"})
    assert not openvino.marker.evaluate({"platform_machine": "aarch64"})  # elsewhere the default install keeps ONNX Runtime
