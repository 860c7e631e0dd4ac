"""A phone over adb: the artifact is pushed and timed by the runtime's own benchmark tool on the phone
(LiteRT's `benchmark_model`, ExecuTorch's `executor_runner`), with the device profile's threads and
XNNPACK; the tool's printed timings are parsed here. Accuracy stays on the host, with the same file
and the same XNNPACK kernels (labelled so in the report).

Output formats parsed (as the tools print them):
  benchmark_model: `count=50 first=.. curr=.. min=.. max=.. avg=.. std=.. [p5=.. median=.. p95=..]` per
      phase (the last is the timed one), and `Inference timings in us: Init: .., First inference: ..,
      Warmup (avg): .., Inference (avg): ..`.
  executor_runner: `Model loaded in X ms.`, `Iteration i of N: X ms` per execution (ET_LOG Info lines),
      `Model executed successfully N time(s) in X ms.`
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath

from deploykit.core.errors import DeployKitError

TOOL_OUTPUT_LIMIT = 2000  # characters of a failed tool's output shown to the user


@dataclass(frozen=True)
class PhoneTiming:
    """Latency the phone's own tool measured (ms); p90/p99 only where the tool gives every run."""

    tool: str
    runs: int
    p50_ms: float | None  # None: an older benchmark_model that prints no median
    mean_ms: float
    min_ms: float
    max_ms: float
    init_ms: float | None
    p90_ms: float | None = None
    p99_ms: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def adb_prefix(adb) -> list[str]:
    return ["adb", *(["-s", adb.serial] if adb.serial else [])]


def remote_path(adb, artifact_name: str) -> str:
    return str(PurePosixPath(adb.remote_dir) / artifact_name)


def push_commands(adb, local: str, artifact_name: str) -> list[list[str]]:
    return [[*adb_prefix(adb), "shell", "mkdir", "-p", adb.remote_dir],
            [*adb_prefix(adb), "push", local, remote_path(adb, artifact_name)]]


def benchmark_command(device, artifact_name: str, *, runs: int, warmup: int) -> list[str]:
    """The tool's command line on the phone for `device` (its runtime, threads and adb settings)."""
    adb, model, threads = device.adb, remote_path(device.adb, artifact_name), device.threads or 1
    if device.runtime == "litert":
        args = [f"--graph={model}", f"--num_threads={threads}", "--use_xnnpack=true", f"--num_runs={runs}",
                f"--warmup_runs={warmup}", "--min_secs=0", "--warmup_min_secs=0"]
    elif device.runtime == "executorch":  # no warm-up flag: the first `warmup` iterations are dropped
        args = [f"--model_path={model}", f"--num_executions={warmup + runs}", f"--cpu_threads={threads}",
                "--print_output=none"]
    else:
        raise DeployKitError(f"device {device.name}: no adb benchmark tool for runtime {device.runtime}",
                             fix="adb profiles take runtime litert or executorch")
    return [*adb_prefix(adb), "shell", adb.tool, *args]


def parse_benchmark_model(text: str) -> PhoneTiming:
    """LiteRT benchmark_model's output: the last `count=` line is the timed phase (microseconds)."""
    stats = [dict(re.findall(r"(\w+)=([-+0-9.eE]+)", line)) for line in text.splitlines()
             if re.search(r"\bcount=\d+", line) and "avg=" in line]
    if not stats:
        raise _unparsable("benchmark_model", text, "no `count=... avg=...` line")
    timed = stats[-1]
    init = re.search(r"Init: ([0-9.eE+-]+)", text)
    median = timed.get("median")  # printed by recent versions only (with p5 and p95)
    return PhoneTiming("benchmark_model", int(timed["count"]), float(median) / 1e3 if median else None,
                       float(timed["avg"]) / 1e3, float(timed["min"]) / 1e3, float(timed["max"]) / 1e3,
                       float(init.group(1)) / 1e3 if init else None)


def parse_executor_runner(text: str, warmup: int) -> PhoneTiming:
    """ExecuTorch executor_runner's output: one `Iteration i of N: X ms` line per execution."""
    if not re.search(r"Model executed successfully \d+ time\(s\)", text):
        raise _unparsable("executor_runner", text, "no `Model executed successfully` line")
    times = [float(ms) for ms in re.findall(r"Iteration \d+ of \d+: ([0-9.eE+-]+) ms", text)][warmup:]
    if not times:
        raise _unparsable("executor_runner", text, f"no `Iteration i of N` lines after {warmup} warm-up runs")
    load = re.search(r"Model loaded in ([0-9.eE+-]+) ms", text)
    ordered = sorted(times)
    return PhoneTiming("executor_runner", len(times), statistics.median(times), statistics.fmean(times),
                       ordered[0], ordered[-1], float(load.group(1)) if load else None,
                       _quantile(ordered, 0.9), _quantile(ordered, 0.99))


def _quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default), as deploykit's own latency has."""
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[round(q * 100) - 1]


def _unparsable(tool: str, text: str, what: str) -> DeployKitError:
    return DeployKitError(f"cannot read {tool}'s timings ({what}); it printed: {text[-TOOL_OUTPUT_LIMIT:]!r}",
                          fix=f"check that the phone's {tool} runs the artifact (run the printed command by hand)")


def adb_unavailable(adb) -> str | None:
    """Why no phone can be reached over adb here, or None when one is attached."""
    if shutil.which("adb") is None:
        return "adb is not on PATH (no Android platform tools on this machine)"
    result = subprocess.run([*adb_prefix(adb), "get-state"], capture_output=True, text=True, timeout=30)
    if result.returncode != 0 or result.stdout.strip() != "device":
        return f"no phone attached over adb ({(result.stderr or result.stdout).strip() or 'adb get-state failed'})"
    return None


def run_tool(command: list[str], timeout: float = 600) -> str:
    """Run an adb command; a failure is one message with the command and its output."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise DeployKitError(f"`{' '.join(command)}` failed ({result.returncode}): "
                             f"{(result.stderr or result.stdout)[-TOOL_OUTPUT_LIMIT:]}",
                             fix="check the phone, its adb connection and the tool path in the device profile")
    return result.stdout + result.stderr
