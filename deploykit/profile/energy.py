"""Energy from the machine's own counters, or nothing: RAPL (Linux powercap, CPU package energy) or
NVML (an NVIDIA GPU's energy counter). There is no estimate from TDP or MACs: without a readable counter
the answer is "n/a" and the reason.

RAPL counts the whole package, so other processes running at the same time are counted too; the reading
is the energy the machine spent while the model ran, divided by the images it processed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

POWERCAP = Path("/sys/class/powercap")


class EnergyCounter(Protocol):
    source: str

    def read_joules(self) -> float: ...


@dataclass(frozen=True)
class EnergyReading:
    joules_per_image: float | None
    source: str  # the counter, or why there is none

    def to_dict(self) -> dict:
        return {"joules_per_image": self.joules_per_image, "source": self.source}


class RaplCounter:
    """The sum of the top-level RAPL package domains (`intel-rapl:N`, not their subdomains), with wraparound."""

    def __init__(self, zones: list[Path]) -> None:
        self.zones = zones
        self.ranges = [_read_int(z / "max_energy_range_uj") or 2 ** 32 for z in zones]
        self.source = "RAPL " + "+".join(_zone_name(z) for z in zones)
        self._last = [_read_int(z / "energy_uj") for z in zones]
        self._total_uj = 0

    def read_joules(self) -> float:
        for i, zone in enumerate(self.zones):
            now = _read_int(zone / "energy_uj")
            delta = now - self._last[i]
            self._total_uj += delta if delta >= 0 else delta + self.ranges[i]
            self._last[i] = now
        return self._total_uj / 1e6


class NvmlCounter:
    """GPU 0's total energy since the driver loaded (millijoules), via pynvml."""

    def __init__(self, nvml, handle) -> None:
        self.nvml, self.handle = nvml, handle
        self.source = f"NVML {nvml.nvmlDeviceGetName(handle)}"

    def read_joules(self) -> float:
        return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1e3


def open_counter(runtime: str = "") -> tuple[EnergyCounter | None, str]:
    """(counter, its source) or (None, why not). A GPU runtime reads NVML first, a CPU one RAPL first."""
    openers = [_open_nvml, _open_rapl] if runtime == "tensorrt" else [_open_rapl, _open_nvml]
    reasons = []
    for opener in openers:
        counter, reason = opener()
        if counter is not None:
            return counter, counter.source
        reasons.append(reason)
    return None, "; ".join(reasons)


def measure_energy(counter: EnergyCounter | None, reason: str, run: Callable[[], object], *, images: int,
                   min_seconds: float = 1.0) -> EnergyReading:
    """Energy per image of calling `run` (which processes `images` images) for at least `min_seconds`:
    RAPL updates about every millisecond, so a single call would read mostly quantisation noise."""
    if counter is None:
        return EnergyReading(None, reason)
    calls = 0
    start_j, start = counter.read_joules(), time.perf_counter()
    while calls == 0 or time.perf_counter() - start < min_seconds:
        run()
        calls += 1
    return EnergyReading((counter.read_joules() - start_j) / (calls * images), counter.source)


def _open_rapl() -> tuple[RaplCounter | None, str]:
    zones = sorted(p for p in POWERCAP.glob("intel-rapl:*") if p.name.count(":") == 1)
    if not zones:
        return None, f"no RAPL domains under {POWERCAP}"
    try:
        return RaplCounter(zones), ""
    except PermissionError:
        return None, f"RAPL counters under {POWERCAP} are not readable (root only on this kernel)"
    except (OSError, ValueError) as exc:
        return None, f"RAPL counters unreadable: {exc}"


def _open_nvml() -> tuple[NvmlCounter | None, str]:
    try:
        import pynvml
    except ImportError:
        return None, "pynvml is not installed (NVIDIA GPUs only)"
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        counter = NvmlCounter(pynvml, handle)
        counter.read_joules()
        return counter, ""
    except Exception as exc:  # noqa: BLE001 - pynvml raises NVMLError subclasses per failure
        return None, f"NVML has no energy counter here: {exc}"


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def _zone_name(zone: Path) -> str:
    try:
        return (zone / "name").read_text().strip()
    except OSError:
        return zone.name
