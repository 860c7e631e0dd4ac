"""Shared by the sweep tests: small real-image folders, a small spec, running `deploykit sweep` as a
process, and the processes and listening sockets it left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import DATA_DIR

SPEC = """\
name: small
model: resnet20_cifar
data: {{eval: {eval}, calib: {calib}}}
devices: [host-cpu-ort, host-cpu-openvino]
profile: {{runs: 10, warmup: 2, batches: [1]}}
int8: {{calib_method: minmax, per_channel: "on", calib_size: 40}}
sweep:
  {axes}
"""
LOOPBACK = ("127.", "::1", "::ffff:127.")


def image_folder(root: Path, per_class: int, offset: int) -> Path:
    """A class-folder dataset of symlinks to `per_class` cifar10/test images per class (none copied)."""
    source = DATA_DIR / "cifar10" / "test"
    for klass in sorted(p.name for p in source.iterdir()):
        (root / klass).mkdir(parents=True, exist_ok=True)
        for image in sorted((source / klass).iterdir())[offset:offset + per_class]:
            (root / klass / image.name).symlink_to(image)
    return root


def write_spec(folder: Path, axes: str = "precision: [fp32, int8]") -> Path:
    data = image_folder(folder / "eval", 8, 0)
    calib = image_folder(folder / "calib", 5, 100)
    spec = folder / "small.yaml"
    spec.write_text(SPEC.format(eval=data, calib=calib, axes=axes))
    return spec


def environment(home: Path) -> dict:
    """A private HOME (Ray writes its token there) and no inherited debug or cache settings."""
    drop = ("DEPLOYKIT_DEBUG", "DEPLOYKIT_PIPELINE_CACHE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    home.mkdir(parents=True, exist_ok=True)
    return {**env, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}


def sweep_command(spec: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "deploykit", "sweep", str(spec), "--cache", str(cache), "--out", str(out), *extra]


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """In a session of its own, so that everything it starts can be found (and ended) by session id."""
    return subprocess.Popen(args, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def session_processes(sid: int) -> dict[int, str]:
    """pid -> command line of every live process of session `sid`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[3]) == sid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, ValueError, IndexError):
            continue
    return found


def end_session(sid: int) -> None:
    """SIGKILL every process of the session (ours: started with start_new_session)."""
    for pid in session_processes(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def listening(pids: set[int]) -> list[tuple[str, int]]:
    """(local address, pid) of every listening TCP socket of `pids`, from `ss`."""
    out = subprocess.run(["ss", "-tlnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        for token in parts[-1].split("pid=")[1:]:
            pid = int(token.split(",")[0])
            if pid in pids:
                found.append((parts[3], pid))
    return found


def non_loopback(addresses: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return [(a, pid) for a, pid in addresses if not a.strip("[").startswith(LOOPBACK)]


def wait_for(predicate, timeout: float, every: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())
