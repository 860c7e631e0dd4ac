"""Profiling a phone over adb: the `Runner` for devices with an `adb:` block.

Latency is the phone's: its runtime's own benchmark tool times the pushed artifact with the profile's
threads and XNNPACK (`runtimes.adb`). Everything that needs outputs (warm-up, accuracy, agreement) runs
on this host with the same file and the same XNNPACK kernels, and the report's environment says so.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from deploykit import runtimes
from deploykit.core.errors import DeployKitError
from deploykit.profile.latency import LatencyStats


@dataclasses.dataclass
class PhoneArtifact:
    """An artifact pushed to the phone, with its host twin for outputs."""

    host: runtimes.Runnable
    remote_name: str
    device: object

    def __getattr__(self, name):  # precision_used, version, static_batch, run: the host twin's
        return getattr(self.host, name)


class AdbRunner:
    def __init__(self, device) -> None:
        self.device, self.timings = device, {}

    @classmethod
    def connect(cls, device) -> "AdbRunner":
        from deploykit.runtimes.adb import adb_unavailable

        reason = adb_unavailable(device.adb)
        if reason:
            raise DeployKitError(f"device {device.name} cannot be reached: {reason}",
                                 fix=f"attach the phone with USB debugging on (and `{device.adb.tool}` pushed), "
                                     f"or profile on this machine with host-cpu-{device.runtime}")
        return cls(device)

    def load(self, path: Path, device) -> tuple[PhoneArtifact, float]:
        from deploykit.runtimes.adb import push_commands, run_tool

        start = time.perf_counter()
        for command in push_commands(device.adb, str(path), Path(path).name):
            run_tool(command)
        pushed = time.perf_counter() - start
        host = runtimes.load(path, dataclasses.replace(device, location="local", adb=None))
        return PhoneArtifact(host, Path(path).name, device), pushed

    def warm_up(self, runnable, probe: np.ndarray, times: int) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        for _ in range(times):
            out = runnable.run(probe)  # on the host: outputs for accuracy, not latency
        return time.perf_counter() - start, out

    def latency(self, calls: dict, *, runs: int, warmup: int, progress=None) -> dict[str, LatencyStats]:
        stats = {}
        for done, (name, (runnable, _batch)) in enumerate(calls.items(), 1):
            if isinstance(runnable, PhoneArtifact):  # the float original (torch) runs on the host
                stats[name] = self._phone_latency(runnable, runs, warmup)
            if progress:
                progress(done, len(calls))
        return stats

    def _phone_latency(self, artifact: PhoneArtifact, runs: int, warmup: int) -> LatencyStats:
        from deploykit.runtimes.adb import (benchmark_command, parse_benchmark_model, parse_executor_runner,
                                            run_tool)

        output = run_tool(benchmark_command(self.device, artifact.remote_name, runs=runs, warmup=warmup))
        timing = parse_benchmark_model(output) if self.device.runtime == "litert" else \
            parse_executor_runner(output, warmup)
        self.timings[artifact.remote_name] = timing.to_dict()
        p50 = timing.p50_ms if timing.p50_ms is not None else timing.mean_ms
        return LatencyStats(p50, timing.p90_ms or math.nan, timing.p99_ms or math.nan, timing.mean_ms, timing.runs)

    def environment(self) -> dict:
        return {"runner": f"adb ({self.device.adb.tool} on the phone)", "phone_timings": self.timings,
                "outputs": "accuracy and agreement on this host, same file, same XNNPACK kernels"}
