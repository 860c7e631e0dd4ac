"""Is the int8 artifact faster than the float one where it will run? Measured, not assumed.

int8 pays off only where a runtime has int8 kernels for the layout (ONNX Runtime ran the TensorRT-style
layout 1.5-2.6x *slower* than float), so after an int8 build the two files are timed side by side on the
device's runtime: here for a local device, on the device through its agent for a remote one. A slower
or equal int8 is said with the figures; `--require-faster` makes it an error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from deploykit.core.errors import DeployKitError

TARGET_SECONDS = 1.0  # of timed calls per candidate: ten rounds of a stable median at any model size
MIN_RUNS, MAX_RUNS = 20, 200
UNSTABLE_SPREAD = 0.10  # rounds' medians differing by more: the machine disturbed the measurement
ATTEMPTS = 2  # an unstable measurement is repeated once before it is reported as unstable


@dataclass(frozen=True)
class SpeedCheck:
    device: str
    runtime: str
    float_ms: float
    int8_ms: float
    runs: int
    unstable: bool
    precision_used: str

    @property
    def ratio(self) -> float:
        return self.int8_ms / self.float_ms

    @property
    def faster(self) -> bool:
        return self.ratio < 1.0 and not self.unstable

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": round(self.ratio, 3), "faster": self.faster}

    def message(self) -> str:
        where = f"{self.device} ({self.runtime})"
        figures = f"p50 {self.int8_ms:.3g} ms int8 vs {self.float_ms:.3g} ms float, ratio {self.ratio:.2f}"
        if self.unstable:
            return f"int8 speed on {where}: {figures}, but the machine disturbed the timing (unstable); rerun " \
                   "on a quiet machine before trusting it"
        if self.faster:
            return f"int8 speed on {where}: {figures} ({1 / self.ratio:.1f}x faster; ran {self.precision_used})"
        return f"int8 is NOT faster on {where}: {figures} (ran {self.precision_used}); deploy the float model there"


def time_against_float(float_path: Path, int8_path: Path, device, probe: np.ndarray) -> SpeedCheck:
    """Median latency of both files on `device` at the probe's batch, alternating in blocks."""
    from deploykit.pipeline.runners import reach_device

    runner = reach_device(device)
    float_model, _ = runner.load(Path(float_path), device)
    int8_model, _ = runner.load(Path(int8_path), device)
    calls = {"float": (float_model, probe), "int8": (int8_model, probe)}
    runs = _runs(runner, float_model, probe)
    for _ in range(ATTEMPTS):
        stats = runner.latency(calls, runs=runs, warmup=3)
        unstable = any((s.spread or 0.0) > UNSTABLE_SPREAD for s in stats.values())
        if not unstable:
            break
    return SpeedCheck(device.name, device.runtime, stats["float"].p50_ms, stats["int8"].p50_ms, runs, unstable,
                      str(getattr(int8_model, "precision_used", "int8")))


def _runs(runner, model, probe: np.ndarray) -> int:
    seconds, _ = runner.warm_up(model, probe, 3)
    per_call = max(seconds / 3, 1e-5)
    return int(min(MAX_RUNS, max(MIN_RUNS, TARGET_SECONDS / per_call)))


def require_faster(check: SpeedCheck | None, reason: str = "") -> None:
    """--require-faster: an int8 artifact that was not measured faster is not published."""
    if check is None:
        raise DeployKitError(f"--require-faster: int8 could not be timed against float here: {reason}",
                             fix="time it on the device (pass --device NAME for a device this machine or its "
                                 "agent reaches), or drop --require-faster")
    if not check.faster:
        raise DeployKitError(f"--require-faster: {check.message()}",
                             fix="export the float model for this device, choose a device whose runtime has "
                                 "int8 kernels (e.g. --device host-cpu-openvino), or drop --require-faster; "
                                 "nothing was written")
