"""What every benchmark reports about the machine it ran on: timings mean little without the load beside them."""

from __future__ import annotations

import os
import platform
from pathlib import Path

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx_vnni", "avx512_vnni", "amx_bf16")


def cpu_model_and_isa() -> tuple[str, list[str]]:
    """The CPU model name and which of :data:`ISA_FLAGS` it has (Linux; elsewhere the platform's name)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), []
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return fields.get("model name", platform.machine()), [f for f in ISA_FLAGS if f in flags]


def machine_info() -> dict:
    model, isa = cpu_model_and_isa()
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": model,
        "isa": isa,
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
    }


def finish(info: dict) -> dict:
    """Add the load average at the end of the measurement."""
    info["load_average_at_end"] = os.getloadavg()
    return info
