"""Where a device's artifacts run: this machine, or the device itself through its agent.

`profile_artifacts` does everything else the same way for both (preprocessing, float originals, accuracy
and agreement on the host): only loading, warming up and timing go through a `Runner`.
`deploykit.agent.client.AgentRunner` is the remote one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from deploykit import runtimes
from deploykit.core.errors import DeployKitError
from deploykit.profile.latency import LatencyStats, measure_side_by_side

if TYPE_CHECKING:
    from deploykit.core.devices import Device

RoundProgress = Callable[[int, int], None]  # (rounds done, rounds in total)


class Runner(Protocol):
    def load(self, path: Path, device: "Device") -> tuple[runtimes.Runnable, float]:
        """The artifact loaded in `device`'s runtime, and the seconds loading took there."""

    def warm_up(self, runnable: runtimes.Runnable, probe: np.ndarray, times: int) -> tuple[float, np.ndarray]:
        """Seconds `times` runs on `probe` took where the runnable lives, and the last output."""

    def latency(self, calls: dict[str, tuple[runtimes.Runnable, np.ndarray]], *, runs: int, warmup: int,
                progress: RoundProgress | None = None) -> dict[str, LatencyStats]:
        """Latency of each named (runnable, input), timed in alternating blocks round by round."""

    def environment(self) -> dict:
        """What to add to the report's environment about where the artifacts ran."""


class LocalRunner:
    def load(self, path: Path, device: "Device") -> tuple[runtimes.Runnable, float]:
        start = time.perf_counter()
        runnable = runtimes.load(path, device)
        return runnable, time.perf_counter() - start

    def warm_up(self, runnable: runtimes.Runnable, probe: np.ndarray, times: int) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        for _ in range(times):
            out = runnable.run(probe)
        return time.perf_counter() - start, out

    def latency(self, calls: dict[str, tuple[runtimes.Runnable, np.ndarray]], *, runs: int, warmup: int,
                progress: RoundProgress | None = None) -> dict[str, LatencyStats]:
        fns = {name: bound_run(runnable, batch) for name, (runnable, batch) in calls.items()}
        return measure_side_by_side(fns, runs=runs, warmup=warmup, progress=progress)

    def environment(self) -> dict:
        return {}


LOCAL = LocalRunner()


def bound_run(runnable: runtimes.Runnable, batch: np.ndarray) -> Callable[[], object]:
    """A call of `runnable` on `batch` with nothing left to pass: what the timers and counters take."""
    return lambda: runnable.run(batch)


def reach_device(device: "Device") -> Runner:
    """This machine's runner for a local device; for a remote one, its agent's (checked to answer and to
    take our token), or an error saying how to reach it."""
    if device.is_local:
        return LOCAL
    if device.adb is not None:  # a phone: its own benchmark tool times, this host computes outputs
        from deploykit.pipeline.adb_runner import AdbRunner

        return AdbRunner.connect(device)
    if device.agent is None:
        raise DeployKitError(f"device {device.name} is remote and has no agent configured",
                             fix=f"add `agent: {{url: http://HOST:8765, token_env: DEPLOYKIT_AGENT_TOKEN}}` to "
                                 f"devices/{device.name}.yaml and run `deploykit agent serve` on the device")
    from deploykit.agent.client import AgentRunner

    return AgentRunner.connect(device)
