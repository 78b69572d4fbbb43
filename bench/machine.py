"""What every benchmark reports about the machine it ran on: timings mean little without the load beside them."""

from __future__ import annotations

import os
import platform


def machine_info() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
    }


def finish(info: dict) -> dict:
    """Add the load average at the end of the measurement."""
    info["load_average_at_end"] = os.getloadavg()
    return info
