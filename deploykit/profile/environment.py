"""What a measurement ran on: CPU model, cores, OS and runtime versions, recorded beside every profile."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from deploykit.core.manifest import tool_versions

CPUINFO = Path("/proc/cpuinfo")


def cpu_model() -> str:
    """The CPU's marketing name: /proc/cpuinfo on Linux, else what platform knows."""
    try:
        for line in CPUINFO.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask), which a container may limit below the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity API
        return os.cpu_count() or 1


def environment(*, threads: int | None = None) -> dict:
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "threads": threads,
        "os": platform.platform(),
        "machine": platform.machine(),
        "versions": tool_versions(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),  # torch's idle threads: spin or sleep
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
