"""Which inference backend and which decoder this machine can serve, and building the chosen backend.

``auto`` prefers TensorRT, then torch on CUDA, then on the CPU OpenVINO (measured 1.8-2.7x ONNX Runtime in fp32 on
the same ONNX: benchmarks/README.md), then ONNX Runtime (backends) and DALI on the
GPU, then Pillow (decoders). An explicit choice that cannot be served raises BackendUnavailableError
with the reason; nothing falls back silently. Runtimes are imported lazily, only as far as needed.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable

from allbatch.backends.base import Backend
from allbatch.core.errors import BackendUnavailableError, UserInputError
from allbatch.environment.gpu_probe import CUPY_INSTALL_HINT, cuda_gpu_present
from allbatch.model.manifest import ModelArtifact

log = logging.getLogger("allbatch.backends")

BACKEND_NAMES = ("auto", "onnxruntime", "openvino", "torch", "tensorrt")
AUTO_BACKEND_ORDER = ("tensorrt", "torch", "openvino", "onnxruntime")
HOST_BACKENDS = ("onnxruntime", "openvino")
"""Backends that take host (NumPy) batches: GPU decoding would only add a copy back."""
AUTO_CPU_REASON = (
    "the fastest CPU backend: on this model OpenVINO ran 1.8-2.7x ONNX Runtime in fp32, 6.6-10.8x in bf16 on AMX (benchmarks/README.md)"
)
DECODER_NAMES = ("auto", "cpu", "dali", "dali-cpu")
"""``dali`` decodes on the GPU (``device="mixed"``); ``dali-cpu`` runs the same DALI graph on the CPU."""
PRECISIONS = ("fp16", "bf16", "fp32")
"""fp16: the reduced precision of the device (fp16 on GPUs, bf16 on CPUs with native bf16 for openvino, else fp32);
bf16: openvino only."""

Status = tuple[bool, str]
"""(usable on this machine?, why: a version and device, or what is missing)."""

_TENSORRT_MODULE = "allbatch.backends.tensorrt_backend"


# -- backends ------------------------------------------------------------------------------------


def onnxruntime_status() -> Status:
    try:
        import onnxruntime as ort
    except ImportError:
        return False, "onnxruntime not installed"
    if "CPUExecutionProvider" not in ort.get_available_providers():
        return False, f"onnxruntime {ort.__version__} has no CPUExecutionProvider"
    return True, f"onnxruntime {ort.__version__} on CPU ({os.cpu_count() or 1} cores)"


def openvino_status() -> Status:
    from allbatch.backends.openvino_backend import openvino_status as status

    return status()


def torch_status() -> Status:
    from allbatch.backends.torch_backend import torch_cuda_status

    return torch_cuda_status()


def tensorrt_status() -> Status:
    """The TensorRT backend's own verdict (tensorrt importable, CUDA GPU present), confirmed by a GPU probe."""
    try:
        tensorrt_backend = importlib.import_module(_TENSORRT_MODULE)
    except ImportError as exc:
        if exc.name == _TENSORRT_MODULE:
            return False, "allbatch's TensorRT backend module is not present"
        if exc.name is not None and exc.name.startswith("allbatch"):
            raise  # a bug in allbatch, not a missing runtime
        return False, f"tensorrt not installed ({exc})"
    usable, reason = tensorrt_backend.tensorrt_status()
    if not usable:
        return False, reason
    gpu, gpu_reason = cuda_gpu_present()
    if not gpu:
        return False, f"{reason}, but {gpu_reason}"
    return True, reason


_BACKEND_STATUS: dict[str, Callable[[], Status]] = {
    "onnxruntime": onnxruntime_status,
    "openvino": openvino_status,
    "torch": torch_status,
    "tensorrt": tensorrt_status,
}


def backend_status(name: str) -> Status:
    """(usable?, reason) of one concrete backend name (imports only that runtime)."""
    return _BACKEND_STATUS[name]()


def backend_availability() -> dict[str, Status]:
    """{"onnxruntime" | "openvino" | "torch" | "tensorrt": (usable?, reason)} for every backend (imports each runtime)."""
    return {name: status() for name, status in _BACKEND_STATUS.items()}


def choose_backend(name: str, status: Callable[[str], Status]) -> tuple[str, str]:
    """Resolve ``name`` to a concrete backend, asking ``status(backend)`` only as far as needed.

    Returns:
        (backend name, reason it is usable).

    Raises:
        UserInputError: unknown name.
        BackendUnavailableError: the named backend, or for "auto" every backend, cannot run here.
    """
    if name not in BACKEND_NAMES:
        raise UserInputError(f"unknown backend {name!r} (choose from {', '.join(BACKEND_NAMES)})")
    if name != "auto":
        usable, reason = status(name)
        if not usable:
            raise BackendUnavailableError(f"backend {name} is not available: {reason}")
        return name, reason
    refused = []
    for candidate in AUTO_BACKEND_ORDER:
        usable, reason = status(candidate)
        if usable:
            return candidate, f"{reason}; {AUTO_CPU_REASON}" if candidate == "openvino" else reason
        log.debug("auto backend: %s skipped: %s", candidate, reason)
        refused.append(f"{candidate}: {reason}")
    raise BackendUnavailableError("no inference backend can run here (" + "; ".join(refused) + ")")


def create_backend(
    name: str, artifact: ModelArtifact, *, max_batch: int, precision: str = "fp16", cuda_graphs: bool = True, torch_compile: bool = False
) -> Backend:
    """Build (not enter) the backend ``name`` ("auto", "onnxruntime", "openvino", "torch", "tensorrt") for ``artifact``.

    ``precision`` ("fp16" | "bf16" | "fp32", see PRECISIONS) applies to torch, TensorRT and OpenVINO; ONNX Runtime
    always computes in fp32.
    ``max_batch`` is the largest batch ``infer`` will be given at once (TensorRT profiles, torch chunks).
    ``cuda_graphs`` (on by default) and ``torch_compile`` (off by default) apply to torch on CUDA only: both stay
    selectable so that a GPU lease measures each against the other setting (issue 22).

    Raises:
        UserInputError: unknown name or precision, max_batch < 1.
        BackendUnavailableError: the requested backend cannot run here (the message says why).
    """
    if precision not in PRECISIONS:
        raise UserInputError(f"unknown precision {precision!r} ({', '.join(PRECISIONS)})")
    if max_batch < 1:
        raise UserInputError(f"max_batch must be at least 1, got {max_batch}")
    chosen, reason = choose_backend(name, lambda candidate: _BACKEND_STATUS[candidate]())
    log.info("backend %s%s: %s", chosen, " (auto)" if name == "auto" else "", reason)
    if precision == "bf16" and chosen != "openvino":
        raise UserInputError(f"precision bf16 applies to the openvino backend only, not {chosen}")
    if chosen == "onnxruntime":
        from allbatch.backends.ort_backend import OnnxRuntimeBackend

        if precision != "fp32":
            log.debug("onnxruntime computes in fp32 (weights are stored fp16); precision %s does not apply", precision)
        return OnnxRuntimeBackend(artifact)
    if chosen == "openvino":
        from allbatch.backends.openvino_backend import OpenVinoBackend

        return OpenVinoBackend(artifact, precision="auto" if precision == "fp16" else precision, max_batch=max_batch)
    if chosen == "torch":
        from allbatch.backends.torch_backend import TorchBackend

        return TorchBackend(
            artifact,
            device="cuda",
            precision="fp16" if precision == "fp16" else "fp32",
            max_batch=max_batch,
            cuda_graphs=cuda_graphs,
            torch_compile=torch_compile,
        )
    from allbatch.backends.tensorrt_backend import TensorRTBackend

    backend: Backend = TensorRTBackend(artifact, precision=precision, max_batch=max_batch)
    return backend


# -- decoders ------------------------------------------------------------------------------------


def dali_status() -> Status:
    """(nvidia.dali importable?, its version or what is missing). Importing DALI creates no CUDA context."""
    try:
        import nvidia.dali as dali
    except ImportError:
        return False, "nvidia-dali not installed"
    return True, f"nvidia-dali {dali.__version__}"


def cupy_status() -> Status:
    """(cupy importable?, its version or what is missing). Importing CuPy creates no CUDA context."""
    try:
        import cupy
    except ImportError:
        return False, f"cupy not installed ({CUPY_INSTALL_HINT})"
    return True, f"cupy {cupy.__version__}"


def decoder_availability() -> dict[str, Status]:
    """{"cpu" | "dali" | "dali-cpu": (usable?, reason)}. The GPU is found with nvidia-smi when it exists.

    ``dali`` needs DALI, CuPy (the GPU preparer receives DALI's outputs and assembles the batch in CuPy)
    and a CUDA GPU; ``dali-cpu`` needs DALI only.
    """
    import PIL

    dali_ok, dali_reason = dali_status()
    cupy_ok, cupy_reason = cupy_status()
    if not dali_ok:
        gpu = (False, dali_reason)
    elif not cupy_ok:
        gpu = (False, f"{dali_reason} installed but {cupy_reason}")
    else:
        gpu_ok, gpu_reason = cuda_gpu_present()
        found = f"{dali_reason} + {cupy_reason}"
        gpu = (True, f"{found} on {gpu_reason}") if gpu_ok else (False, f"{found} installed but {gpu_reason}")
    return {
        "cpu": (True, f"Pillow {PIL.__version__} + NumPy"),
        "dali": gpu,
        "dali-cpu": (dali_ok, f"{dali_reason} (CPU operators)" if dali_ok else dali_reason),
    }


def resolve_decoder(name: str, *, for_backend: str | None = None) -> str:
    """Resolve a decoder name to "cpu", "dali" or "dali-cpu".

    "auto" is "dali" when DALI, CuPy and a CUDA GPU are usable, else "cpu"; with ``for_backend="onnxruntime"``
    (or another of HOST_BACKENDS) it is "cpu", since that backend takes host arrays and GPU decoding would only add a copy back.

    Raises:
        UserInputError: unknown name.
        BackendUnavailableError: "dali" without DALI, CuPy or a GPU, "dali-cpu" without DALI.
    """
    if name not in DECODER_NAMES:
        raise UserInputError(f"unknown decoder {name!r} (choose from {', '.join(DECODER_NAMES)})")
    if name == "cpu":
        return "cpu"
    if name == "auto" and for_backend in HOST_BACKENDS:
        log.info("decoder cpu (auto): the %s backend runs on the host", for_backend)
        return "cpu"
    available = decoder_availability()
    if name == "auto":
        usable, reason = available["dali"]
        chosen = "dali" if usable else "cpu"
        log.info("decoder %s (auto): %s", chosen, reason if usable else f"dali not usable: {reason}")
        return chosen
    usable, reason = available[name]
    if not usable:
        raise BackendUnavailableError(f"decoder {name} is not available: {reason}")
    return name
