"""Device profiles: `devices/NAME.yaml`, one per device, validated into frozen dataclasses.

A device says which runtime runs the artifact there, in which precision, on which compute units, with
how many threads and at which batch sizes. A `local` device is this machine; a `remote` one is reached
through its agent (`agent: {url, token_env}`), which `deploykit agent serve` runs on the device.

```yaml
description: this machine's CPU, ONNX Runtime
location: local
runtime: onnxruntime
precision: as-exported     # ONNX Runtime runs the graph in the precision it was exported in
compute_units: cpu
threads: 2
batches: [1, 8]
```
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from deploykit.core.config import load_config
from deploykit.core.errors import DeployKitError
from deploykit.core.paths import project_root

RUNTIME_NAMES = ("onnxruntime", "openvino", "coreml", "tensorrt", "torch", "litert", "executorch")

# What each runtime can be asked for. "as-exported": the artifact fixes the precision (a QDQ graph runs
# int8, an fp16 Core ML package fp16); OpenVINO also takes an explicit inference precision for float ops.
PRECISIONS = {
    "onnxruntime": ("as-exported",),
    "openvino": ("fp32", "fp16", "bf16"),
    "coreml": ("as-exported",),
    "tensorrt": ("as-exported",),
    "torch": ("fp32",),
    "litert": ("as-exported",),  # the .tflite fixes it: float ops fp32, int8 ops int8 (XNNPACK)
    "executorch": ("as-exported",),
}
COMPUTE_UNITS = {
    "onnxruntime": ("cpu",),
    "openvino": ("cpu", "gpu", "npu"),
    "coreml": ("all", "cpu_only", "cpu_and_gpu", "cpu_and_ne"),
    "tensorrt": ("gpu",),
    "torch": ("cpu",),
    "litert": ("cpu",),  # XNNPACK on the CPU
    "executorch": ("cpu",),
}


ADB_RUNTIMES = ("litert", "executorch")
# Threads of a run on this host when nothing names them (eval, fine-tune, calibration, the int8 search): the
# two cores deploykit's machines have. A device file's `threads:` is always explicit.
DEFAULT_THREADS = 2


@dataclass(frozen=True)
class AgentConfig:
    """Where the device's agent listens; the token is read from the environment variable named here."""

    url: str
    token_env: str | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"agent url must start with http:// or https://, got {self.url!r}")


@dataclass(frozen=True)
class AdbConfig:
    """A phone reached over adb: the runtime's own benchmark tool, already on the phone, times the artifact
    (deploykit pushes the file, runs the tool with the device's threads and parses its timings)."""

    tool: str  # the benchmark binary on the phone (LiteRT's benchmark_model, ExecuTorch's executor_runner)
    serial: str | None = None  # adb -s SERIAL; None: the only attached device
    remote_dir: str = "/data/local/tmp/deploykit"

    def __post_init__(self) -> None:
        if not self.tool.startswith("/") or not self.remote_dir.startswith("/"):
            raise ValueError(f"adb tool and remote_dir must be absolute paths on the phone, got {self.tool!r}, "
                             f"{self.remote_dir!r}")


@dataclass(frozen=True)
class Device:
    runtime: Literal["onnxruntime", "openvino", "coreml", "tensorrt", "torch", "litert", "executorch"]
    location: Literal["local", "remote"]
    description: str = ""
    precision: str | None = None  # None: the runtime's first choice in PRECISIONS
    compute_units: str | None = None  # None: the runtime's first choice in COMPUTE_UNITS
    threads: int | None = None  # None: the runtime's own default
    batches: list[int] = field(default_factory=lambda: [1])
    agent: AgentConfig | None = None
    adb: AdbConfig | None = None  # a phone timed through adb (runtimes litert and executorch)
    name: str = ""  # the file's stem unless given (and then it must equal the stem)

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIME_NAMES:
            raise ValueError(f"runtime {self.runtime!r} is not one of {', '.join(RUNTIME_NAMES)}")
        for key, table in (("precision", PRECISIONS), ("compute_units", COMPUTE_UNITS)):
            if getattr(self, key) is None:
                object.__setattr__(self, key, table[self.runtime][0])
        _check_choice("precision", self.precision, PRECISIONS[self.runtime], self.runtime)
        _check_choice("compute_units", self.compute_units, COMPUTE_UNITS[self.runtime], self.runtime)
        if self.threads is not None and self.threads <= 0:
            raise ValueError(f"threads must be positive, got {self.threads}")
        if not self.batches or min(self.batches) <= 0 or len(set(self.batches)) != len(self.batches):
            raise ValueError(f"batches must be distinct positive sizes, got {self.batches}")
        if self.location == "local" and self.agent is not None:
            # Measuring here what the file says runs on the agent's device would be a silent wrong answer.
            raise DeployKitError(f"location: local (this machine) with an agent at {self.agent.url}: which is it?",
                                 fix="set `location: remote` to measure through the agent, or drop the `agent:` "
                                     "block to measure on this machine")

        if self.adb is not None and (self.agent is not None or self.location == "local"
                                     or self.runtime not in ADB_RUNTIMES):
            raise ValueError(f"adb: is for a remote phone running {' or '.join(ADB_RUNTIMES)} (without agent:), "
                             f"not location {self.location} with runtime {self.runtime}")

    @property
    def is_local(self) -> bool:
        return self.location == "local"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_choice(key: str, value: str, allowed: tuple[str, ...], runtime: str) -> None:
    if value not in allowed:
        raise ValueError(f"{key} {value!r} is not one {runtime} takes: {', '.join(allowed)}")


def devices_dir() -> Path:
    """The repository's `devices/` folder, found relative to the package."""
    return project_root() / "devices"


def device_names() -> list[str]:
    return sorted(p.stem for p in devices_dir().glob("*.yaml"))


def load_device(name_or_path: str | Path) -> Device:
    """`devices/NAME.yaml` for a name, or the YAML file at a path (anything ending in .yaml/.yml)."""
    text = str(name_or_path)
    path = Path(text) if text.endswith((".yaml", ".yml")) or "/" in text else devices_dir() / f"{text}.yaml"
    if not path.is_file():
        raise _unknown_device(text, path)
    device = load_config(path, Device)
    if device.name and device.name != path.stem:
        raise DeployKitError(f"{path}: name {device.name!r} differs from the file name {path.stem!r}",
                             fix="drop `name:` (the file name is the device's name) or rename the file")
    return dataclasses.replace(device, name=path.stem)


def check_device(name: str) -> Device:
    """A registry check for recipes: the device exists and is valid."""
    return load_device(name)


def _unknown_device(text: str, path: Path) -> DeployKitError:
    names = device_names()
    if text.endswith((".yaml", ".yml")) or "/" in text:
        return DeployKitError(f"device file not found: {path}", fix="check the path")
    close = difflib.get_close_matches(text, names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return DeployKitError(f"unknown device {text!r} (no {path})",
                          fix=f"{hint}known devices: {', '.join(names) or 'none'}; or pass a path to a YAML file")


def host_device(runtime: str, threads: int = DEFAULT_THREADS) -> Device:
    """This machine, running `runtime` at its default precision: what `deploykit eval` runs an artifact on."""
    return Device(runtime=runtime, location="local", threads=threads, name=f"host-cpu-{runtime}")
