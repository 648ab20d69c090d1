"""What the CPU can do: model, cores, the instruction-set features that decide CPU inference speed, and
the arithmetic peak they imply (``allbatch info``, the benchmark report, OpenVINO's precision choice).

Read from ``/proc/cpuinfo`` (Linux); elsewhere the model comes from ``platform`` and no feature is claimed.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")
MAX_FREQ = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
ISA_FLAGS = {
    "avx2": "avx2",
    "fma": "fma",
    "avx512": "avx512f",
    "avx512_vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni",
    "avx512_bf16": "avx512_bf16",
    "avx512_fp16": "avx512_fp16",
    "amx_bf16": "amx_bf16",
    "amx_int8": "amx_int8",
}
"""Report name -> /proc/cpuinfo flag."""
FMA_UNITS_PER_CORE = 2
"""Vector FMA pipes per core: not visible in the flags. Two on Xeon Scalable Gold/Platinum, recent Core and
Zen parts; one on some Xeon Silver/Bronze. The peak is therefore an upper bound."""
AMX_BF16_FLOP_PER_CYCLE = 1024
"""One AMX tile multiply unit per core: 512 bf16 multiply-adds (1,024 flop) per cycle."""


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU this process runs on. ``usable_cores`` counts the cores it may run on (affinity)."""

    model: str
    logical_cores: int
    physical_cores: int | None
    usable_cores: int
    clock_mhz: float | None
    clock_source: str
    flags: frozenset[str]

    def has(self, feature: str) -> bool:
        """``feature`` is a key of ``ISA_FLAGS`` ("avx512", "amx_bf16", ...)."""
        return ISA_FLAGS[feature] in self.flags

    @property
    def native_bf16(self) -> bool:
        """bf16 arithmetic in hardware (AVX512_BF16 or AMX-BF16): what makes bf16 inference faster than fp32."""
        return self.has("avx512_bf16") or self.has("amx_bf16")

    @property
    def vnni(self) -> bool:
        """int8 dot products in hardware (AVX512_VNNI, AVX-VNNI or AMX-INT8): what makes int8 inference pay off."""
        return self.has("avx512_vnni") or self.has("avx_vnni") or self.has("amx_int8")

    @property
    def fp32_lanes(self) -> int:
        """float32 lanes of the widest FMA: 16 (AVX-512), 8 (AVX2 + FMA), 4 (SSE, no FMA)."""
        if self.has("avx512"):
            return 16
        return 8 if self.has("avx2") and self.has("fma") else 4

    def peak_gflops(self) -> dict[str, float | None]:
        """Arithmetic peak of the usable cores: fp32 = cores x FMA units x lanes x 2 flop x clock; bf16 on AMX
        = cores x 1,024 flop x clock. None when the clock is unknown."""
        if self.clock_mhz is None:
            return {"fp32": None, "bf16_amx": None}
        ghz = self.clock_mhz / 1000.0
        fp32 = self.usable_cores * FMA_UNITS_PER_CORE * self.fp32_lanes * 2 * ghz
        amx = self.usable_cores * AMX_BF16_FLOP_PER_CYCLE * ghz if self.has("amx_bf16") else None
        return {"fp32": round(fp32, 1), "bf16_amx": None if amx is None else round(amx, 1)}

    def isa_summary(self) -> str:
        """One line, e.g. "AVX2, AVX-512, VNNI, bf16, AMX" (what ``info`` prints)."""
        names = [("avx2", "AVX2"), ("avx512", "AVX-512")]
        parts = [label for key, label in names if self.has(key)]
        parts += ["VNNI"] if self.vnni else []
        parts += ["bf16"] if self.native_bf16 else []
        parts += ["AMX"] if self.has("amx_bf16") or self.has("amx_int8") else []
        return ", ".join(parts) or "no AVX2"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "logical_cores": self.logical_cores,
            "physical_cores": self.physical_cores,
            "usable_cores": self.usable_cores,
            "clock_mhz": self.clock_mhz,
            "clock_source": self.clock_source,
            "isa": {name: self.has(name) for name in ISA_FLAGS},
            "isa_summary": self.isa_summary(),
            "native_bf16": self.native_bf16,
            "vnni": self.vnni,
            "peak_gflops": self.peak_gflops(),
            "peak_assumes": (
                f"{FMA_UNITS_PER_CORE} FMA units/core, {self.fp32_lanes} fp32 lanes, {self.clock_mhz} MHz ({self.clock_source})"
            ),
        }


def parse_cpuinfo(text: str) -> tuple[str, set[tuple[str, str]], float | None, frozenset[str]]:
    """(model name, {(package, core)}, "cpu MHz" of the first CPU, flags of the first CPU) from /proc/cpuinfo text."""
    model, package, mhz = "", "", None
    cores: set[tuple[str, str]] = set()
    flags: frozenset[str] = frozenset()
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name" and not model:
            model = value
        elif key == "physical id":
            package = value
        elif key == "core id":
            cores.add((package, value))
        elif key == "cpu MHz" and mhz is None:
            try:
                mhz = float(value)
            except ValueError:
                mhz = None
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return model, cores, mhz, flags


def cpu_features() -> CpuFeatures:
    """The CPU this process runs on (reads /proc/cpuinfo and cpufreq once per call)."""
    model = platform.processor() or "unknown"
    cores: set[tuple[str, str]] = set()
    mhz: float | None = None
    flags: frozenset[str] = frozenset()
    clock_source = "unknown"
    if CPUINFO.is_file():
        name, cores, mhz, flags = parse_cpuinfo(CPUINFO.read_text(encoding="utf-8", errors="replace"))
        model = name or model
        clock_source = "/proc/cpuinfo cpu MHz" if mhz is not None else clock_source
    try:
        mhz = int(MAX_FREQ.read_text().strip()) / 1000.0  # kHz; the turbo limit beats the momentary reading
        clock_source = "cpufreq cpuinfo_max_freq"
    except (OSError, ValueError):
        pass  # virtual machines usually have no cpufreq: the /proc/cpuinfo figure stays
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return CpuFeatures(
        model=model,
        logical_cores=os.cpu_count() or 1,
        physical_cores=len(cores) or None,
        usable_cores=usable,
        clock_mhz=mhz,
        clock_source=clock_source,
        flags=flags,
    )


def cpu_info() -> dict[str, Any]:
    """CPU model, logical / physical / usable cores, clock, instruction-set features and arithmetic peak
    (``cpu_features``)."""
    return cpu_features().to_dict()
