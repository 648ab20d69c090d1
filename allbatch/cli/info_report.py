"""The environment report behind ``allbatch info``: versions, CPU, GPUs, usable backends and decoders, model.

Works with only the core dependencies installed: every optional package is imported inside a guard.
"""

from __future__ import annotations

import importlib
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from allbatch import __version__
from allbatch.core.errors import ModelError
from allbatch.environment.cpu_features import cpu_info
from allbatch.model.manifest import DEFAULT_MODEL, load_model_artifact, sha256_of_file

NOT_INSTALLED = "not installed"
CORE_LIBRARIES = ("numpy", "h5py", "pillow", "onnx", "onnxruntime", "typer", "rich")
"""Distribution names of the core dependencies (read from package metadata, not imported)."""
OPTIONAL_MODULES = ("torch", "cupy", "nvidia.dali", "tensorrt", "openvino")
"""GPU packages, imported to read ``__version__`` (their distribution names vary with the CUDA version)."""


def core_library_versions() -> dict[str, str]:
    versions = {}
    for dist in CORE_LIBRARIES:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = NOT_INSTALLED
    return versions


def optional_module_version(module: str) -> str:
    """``module.__version__``, or "not installed", or "import failed: ..." for a broken GPU install."""
    try:
        imported = importlib.import_module(module)
    except ImportError:
        return NOT_INSTALLED
    except OSError as exc:  # a GPU package whose shared libraries (CUDA, cuDNN, nvinfer) cannot be loaded
        return f"import failed: {exc}"
    return str(getattr(imported, "__version__", "unknown version"))


def model_info(path: Path = DEFAULT_MODEL) -> dict[str, Any]:
    """The model artifact at ``path``: whether it exists, its sha256, and whether it matches its manifest."""
    info: dict[str, Any] = {"path": str(path), "exists": path.is_file(), "sha256": "", "verified": False, "error": ""}
    if not info["exists"]:
        info["error"] = "model file not found"
        return info
    info["size_mib"] = round(path.stat().st_size / (1 << 20), 1)
    try:
        artifact = load_model_artifact(path)
    except ModelError as exc:
        info["sha256"] = sha256_of_file(path)
        info["error"] = str(exc)
        return info
    manifest = artifact.manifest
    info.update(
        sha256=artifact.sha256,
        verified=True,
        name=manifest.name,
        input_shape=manifest.input_shape,
        weights_dtype=manifest.weights_dtype,
    )
    return info


OPENVINO_MEASURED = (
    "on the shipped model OpenVINO ran 1.8x ONNX Runtime in fp32 on a 2-core AVX-512/AMX Intel Xeon "
    "(docs/benchmarks.md; bf16 on AMX 6.7x where a model's manifest allows it)"
)
"""What the advice rests on: measured with ``allbatch bench`` (see docs/benchmarks.md, "CPU inference")."""


def openvino_advice(cpu: dict[str, Any], backends: dict[str, dict[str, Any]], auto_backend: str | None) -> str | None:
    """One line when the OpenVINO runtime would be faster here than what ``auto`` runs now: OpenVINO is not
    usable, ``auto`` falls back to ONNX Runtime, and the CPU has AVX-512 or AMX (where the speed-up was measured);
    None otherwise (OpenVINO already used, a GPU backend chosen, or a CPU where no gain was measured).

    ``cpu``, ``backends``: ``collect_info()``'s "cpu" and "backends" entries."""
    if backends["openvino"]["available"] or auto_backend != "onnxruntime":
        return None
    isa = cpu["isa"]
    wide = [label for key, label in (("avx512", "AVX-512"), ("amx_bf16", "AMX")) if isa.get(key)]
    if not wide:
        return None
    return (
        f"the OpenVINO runtime would be faster here: this CPU has {' and '.join(wide)}, and {OPENVINO_MEASURED}; "
        f"install it with pip install 'allbatch[openvino]' (auto then picks it)"
    )


def _status_dict(statuses: dict[str, tuple[bool, str]]) -> dict[str, dict[str, Any]]:
    return {name: {"available": usable, "reason": reason} for name, (usable, reason) in statuses.items()}


def collect_info(model: Path | None = None) -> dict[str, Any]:
    """Everything ``allbatch info`` reports, as JSON-serialisable data. Imports each installed runtime once."""
    from allbatch.backends.select import backend_availability, choose_backend, decoder_availability
    from allbatch.core.errors import BackendUnavailableError
    from allbatch.environment.gpu_probe import probe_gpus

    gpus, gpu_note = probe_gpus()
    backends = backend_availability()
    try:
        chosen, why = choose_backend("auto", backends.__getitem__)
        auto: dict[str, str | None] = {"backend": chosen, "reason": why}
    except BackendUnavailableError as exc:
        auto = {"backend": None, "reason": str(exc)}
    cpu = cpu_info()
    backend_statuses = _status_dict(backends)
    return {
        "allbatch": __version__,
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(), "executable": sys.executable},
        "platform": platform.platform(),
        "cpu": cpu,
        "libraries": core_library_versions(),
        "optional_libraries": {module: optional_module_version(module) for module in OPTIONAL_MODULES},
        "gpus": [gpu.to_dict() for gpu in gpus],
        "gpu_probe": gpu_note,
        "backends": backend_statuses,
        "backend_auto": auto,
        "advice": [line for line in (openvino_advice(cpu, backend_statuses, auto["backend"]),) if line],
        "decoders": _status_dict(decoder_availability()),
        "model": model_info(model if model is not None else DEFAULT_MODEL),
    }


def _yes_no(usable: bool, reason: str) -> Text:
    return Text.assemble(("yes  " if usable else "no   ", "bold green" if usable else "bold red"), reason)


def render_info(info: dict[str, Any]) -> Table:
    """A two-column rich table of ``collect_info()``'s result, one section per topic."""
    table = Table(title=f"allbatch {info['allbatch']}", show_header=False, title_justify="left")
    table.add_column("item", style="bold")
    table.add_column("value", overflow="fold")
    cpu = info["cpu"]
    table.add_row("python", Text(f"{info['python']['version']} ({info['python']['executable']})"))
    table.add_row("platform", Text(info["platform"]))
    cores = f"{cpu['logical_cores']} logical, {cpu['physical_cores'] or '?'} physical, {cpu['usable_cores']} usable"
    table.add_row("cpu", Text(f"{cpu['model']} ({cores})"))
    peak = cpu["peak_gflops"]
    peaks = f"peak {peak['fp32']} GFLOP/s fp32" if peak["fp32"] else "peak unknown (no clock)"
    peaks += f", {peak['bf16_amx']} bf16 on AMX" if peak.get("bf16_amx") else ""
    table.add_row("cpu isa", Text(f"{cpu['isa_summary']}; {peaks} ({cpu['peak_assumes']})"))
    table.add_section()
    for name, version in info["libraries"].items():
        table.add_row(name, Text(version))
    for name, version in info["optional_libraries"].items():
        table.add_row(name, Text(version, style="dim" if version == NOT_INSTALLED else ""))
    table.add_section()
    if not info["gpus"]:
        table.add_row("gpu", Text(f"none: {info['gpu_probe']}", style="dim"))
    for gpu in info["gpus"]:
        details = [f"{gpu['memory_mib']} MiB"] if gpu["memory_mib"] else []
        details += [f"driver {gpu['driver']}"] if gpu["driver"] else []
        details += [f"compute capability {gpu['compute_capability']}"] if gpu["compute_capability"] else []
        table.add_row(f"gpu {gpu['index']}", Text(f"{gpu['name']} ({', '.join(details)})"))
    table.add_section()
    for kind in ("backends", "decoders"):
        for name, status in info[kind].items():
            table.add_row(f"{kind[:-1]} {name}", _yes_no(status["available"], status["reason"]))
        if kind == "backends":
            auto = info["backend_auto"]
            table.add_row("backend auto", Text(f"-> {auto['backend'] or 'none'}: {auto['reason']}"))
            for line in info.get("advice", []):
                table.add_row("advice", Text(line, style="bold yellow"))
    table.add_section()
    model = info["model"]
    table.add_row("model", Text(model["path"]))
    if model["sha256"]:
        table.add_row("model sha256", Text(model["sha256"]))
    table.add_row("model verified", _yes_no(model["verified"], model["error"] or "sha256 matches the manifest"))
    return table
