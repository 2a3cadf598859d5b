"""What CPU this is: training speed and epoch-by-epoch numbers depend on it (bf16 pays only where the
CPU has native bf16: AMX or AVX512-BF16), so the benchmarks and `make train-full` record it next to
their figures."""

from __future__ import annotations

import platform
from pathlib import Path


def _first_cpu() -> dict:
    info: dict = {}
    path = Path("/proc/cpuinfo")
    for line in path.read_text().splitlines() if path.exists() else []:
        key, _, value = (part.strip() for part in line.partition(":"))
        if key in ("model name", "cpu family", "model", "flags") and key not in info:
            info[key] = value
    return info


def cpu_flags() -> set[str]:
    """The first CPU's feature flags (empty off Linux)."""
    return set(_first_cpu().get("flags", "").split())


def cpu_info() -> dict:
    """Model name, family and model of the first CPU, its bf16 / AMX flags and whether it has AVX-512
    ({} fields off Linux)."""
    info = _first_cpu()
    flags = info.pop("flags", "").split()
    info.setdefault("model name", platform.processor())
    return info | {"bf16_flags": sorted(f for f in flags if "bf16" in f or f.startswith("amx")),
                   "avx512": "avx512f" in flags}
