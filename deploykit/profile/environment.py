"""What a measurement ran on: CPU model, cores, OS and runtime versions, recorded beside every profile."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from deploykit.core.manifest import tool_versions

CPUINFO = Path("/proc/cpuinfo")
# The instructions int8 and bf16 speed hinge on (x86 VNNI/AMX, Arm dot-product/i8mm): the same QDQ model
# is 2x slower or 4x faster than fp32 depending on them, so a latency table without them cannot be read.
LOW_PRECISION_ISA = ("avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16", "asimddp", "i8mm", "bf16")


def _cpuinfo(*keys: str) -> str | None:
    """The first value of any of `keys` in /proc/cpuinfo (None off Linux or when absent)."""
    try:
        for line in CPUINFO.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in keys and value.strip():
                return value.strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's marketing name: /proc/cpuinfo on Linux, else what platform knows."""
    return (_cpuinfo("model name", "Model", "Hardware") or platform.processor() or platform.machine()
            or "unknown")


def low_precision_isa() -> list[str]:
    """Which of LOW_PRECISION_ISA the CPU advertises (Linux `flags`/`Features`; empty where unknown)."""
    present = set((_cpuinfo("flags", "Features") or "").split())
    return [name for name in LOW_PRECISION_ISA if name in present]


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask), which a container may limit below the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity API
        return os.cpu_count() or 1


def environment(*, threads: int | None = None) -> dict:
    return {
        "cpu": cpu_model(),
        "low_precision_isa": low_precision_isa(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "threads": threads,
        "os": platform.platform(),
        "machine": platform.machine(),
        "versions": tool_versions(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),  # torch's idle threads: spin or sleep
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
