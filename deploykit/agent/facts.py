"""What the agent's device is and can run, for `GET /info` (with the token): OS, CPU, board, accelerators, runtimes.

Gathered once at start (nvidia-smi and the runtime checks take a moment) and answered from memory.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path

from deploykit.profile.environment import cpu_model, usable_cores

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")  # "NVIDIA Jetson Orin Nano ...", "Raspberry Pi 5 ..."
RUNTIME_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "coreml": "coremltools",
                    "tensorrt": "tensorrt"}
SERVED_RUNTIMES = tuple(RUNTIME_PACKAGES)  # not "torch": a torch file is a pickle, never loaded from a client
NVIDIA_SMI_TIMEOUT_S = 5.0


def device_facts() -> dict:
    return {
        "os": platform.platform(),
        "system": platform.system(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "board": _board(),
        "accelerators": accelerators(),
        "python": platform.python_version(),
    }


def runtime_facts() -> dict[str, dict]:
    """Per runtime the agent serves: available or why not, and the installed version."""
    from deploykit import runtimes

    facts = {}
    for name in SERVED_RUNTIMES:
        reason = runtimes.unavailable(name)
        facts[name] = {"available": reason is None, "version": _version(RUNTIME_PACKAGES[name])}
        if reason:
            facts[name]["reason"] = reason
    return facts


def accelerators() -> list[str]:
    found = []
    system, machine = platform.system(), platform.machine().lower()
    if system in ("Darwin", "iOS") and machine.startswith(("arm64", "iphone", "ipad")):
        found += ["Apple Neural Engine", "Apple GPU"]  # every Apple silicon chip has both
    found += _nvidia_gpus()
    return found


def _nvidia_gpus() -> list[str]:
    """NVML names where pynvml works, else nvidia-smi's, else the Jetson board (its iGPU has no nvidia-smi
    on older JetPacks)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return [f"NVIDIA {_text(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)))}"
                for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # not installed, no driver, or NVML unsupported (Jetson)
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=True).stdout
            names = [f"NVIDIA {line.strip()}" for line in out.splitlines() if line.strip()]
            if names:
                return names
        except (OSError, subprocess.SubprocessError):
            pass
    board = _board() or ""
    return [f"{board} integrated GPU"] if "Jetson" in board else []


def _board() -> str | None:
    try:
        return DEVICE_TREE_MODEL.read_text().strip("\0\n ") or None
    except OSError:
        return None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
