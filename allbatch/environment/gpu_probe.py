"""Which CUDA GPUs this machine has, asked cheaply: ``nvidia-smi`` first (out of process, no CUDA context
here), then CuPy, then torch when they are installed. Used by backend/decoder selection and ``allbatch info``."""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger("allbatch.backends")

NVIDIA_SMI_TIMEOUT_S = 15.0
_QUERY_FIELDS = ("index", "name", "memory.total", "driver_version", "compute_cap")

CUPY_INSTALL_HINT = "pip install cupy-cuda13x"
"""How to get CuPy, which owns device memory, streams and kernels on the GPU path."""


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device. ``memory_mib`` 0 and empty strings mean "not reported by this source"."""

    index: int
    name: str
    memory_mib: int
    driver: str
    compute_capability: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _from_nvidia_smi() -> tuple[list[GpuInfo] | None, str]:
    """GPUs listed by nvidia-smi; ``None`` when nvidia-smi is absent or does not answer."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None, "nvidia-smi not found"
    # compute_cap needs driver >= 510; older drivers reject the whole query, so retry without it.
    for fields in (_QUERY_FIELDS, _QUERY_FIELDS[:-1]):
        try:
            done = subprocess.run(
                [exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=NVIDIA_SMI_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"nvidia-smi failed: {exc}"
        if done.returncode == 0:
            gpus = []
            for line in done.stdout.splitlines():
                parts = [part.strip() for part in line.split(",")]
                if len(parts) < len(fields):
                    continue
                memory = parts[2]
                gpus.append(
                    GpuInfo(
                        index=int(parts[0]),
                        name=parts[1],
                        memory_mib=int(memory) if memory.isdigit() else 0,
                        driver=parts[3],
                        compute_capability=parts[4] if len(fields) > 4 else "",
                        source="nvidia-smi",
                    )
                )
            return gpus, f"nvidia-smi lists {len(gpus)} GPU(s)"
    message = (done.stderr or done.stdout).strip().splitlines()
    return [], f"nvidia-smi: {message[0] if message else f'exit code {done.returncode}'}"


def _from_cupy() -> tuple[list[GpuInfo] | None, str]:
    try:
        import cupy
    except ImportError:
        return None, "cupy not installed"
    runtime = cupy.cuda.runtime
    try:
        count = runtime.getDeviceCount()
        driver = runtime.driverGetVersion()
        gpus = []
        for index in range(count):
            props = runtime.getDeviceProperties(index)
            name = props["name"]
            gpus.append(
                GpuInfo(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    memory_mib=int(props["totalGlobalMem"]) // (1 << 20),
                    driver=f"CUDA {driver // 1000}.{driver % 1000 // 10}",
                    compute_capability=f"{props['major']}.{props['minor']}",
                    source="cupy",
                )
            )
    except runtime.CUDARuntimeError as exc:
        return [], f"cupy: {exc}"
    return gpus, f"cupy sees {len(gpus)} GPU(s)"


def _from_torch() -> tuple[list[GpuInfo] | None, str]:
    try:
        import torch
    except ImportError:
        return None, "torch not installed"
    if not torch.cuda.is_available():
        return [], f"torch {torch.__version__}: CUDA not available"
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(
            GpuInfo(
                index=index,
                name=props.name,
                memory_mib=int(props.total_memory) // (1 << 20),
                driver=f"CUDA {torch.version.cuda}",
                compute_capability=f"{props.major}.{props.minor}",
                source="torch",
            )
        )
    return gpus, f"torch sees {len(gpus)} GPU(s)"


def probe_gpus() -> tuple[list[GpuInfo], str]:
    """(GPUs found, how they were found or why none): the first source that answers wins."""
    notes = []
    for source in (_from_nvidia_smi, _from_cupy, _from_torch):
        gpus, note = source()
        notes.append(note)
        if gpus:
            return gpus, note
    return [], "no CUDA GPU found (" + "; ".join(notes) + ")"


def cuda_gpu_present() -> tuple[bool, str]:
    """(a CUDA GPU is visible?, the first GPU's name or the reason there is none)."""
    gpus, note = probe_gpus()
    if gpus:
        return True, f"{gpus[0].name} ({note})"
    return False, note
