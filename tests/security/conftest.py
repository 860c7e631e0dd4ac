"""A real agent for hostile clients: `deploykit agent serve` as its own process on 127.0.0.1 (so its memory
can be read from /proc), plus raw-socket helpers that do what httpx will not (stall, lie, flood)."""

from __future__ import annotations

import importlib.util
import select
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

if not all(importlib.util.find_spec(name) for name in ("fastapi", "uvicorn", "httpx")):
    collect_ignore_glob = ["test_*.py"]  # pip install "deploykit[agent]"

TOKEN = "security-suite-token-0123456789abcdef"
UPLOAD_CAP_MB = 8  # small, so a regression of a cap costs megabytes, not the machine


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator:
    """One agent process for the module's tests (starting one takes a few seconds)."""
    from tests.agent.agent_helpers import agent_process, free_port

    root = tmp_path_factory.mktemp("security")
    token_file = root / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    with agent_process(root / "store", token_file, free_port(), "--max-upload-mb", str(UPLOAD_CAP_MB)) as agent:
        yield agent


def address(agent) -> tuple[str, int]:
    host, port = agent.url.removeprefix("http://").split(":")
    assert host == "127.0.0.1"
    return host, int(port)


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux: `5` into clear_refs); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def send_until_answered(agent, head: bytes, body_size: int, *, deadline_s: float = 60.0,
                        chunk: int = 1 << 20) -> tuple[int | None, int, float]:
    """Send `head`, then up to `body_size` body bytes, stopping as soon as the agent answers or closes;
    (status or None, body bytes the agent took, seconds to the answer)."""
    sock = socket.create_connection(address(agent), timeout=10)
    start, sent, block = time.monotonic(), 0, b"x" * chunk
    try:
        sock.sendall(head)
        sock.setblocking(False)
        while time.monotonic() - start < deadline_s:
            readable, writable, _ = select.select([sock], [sock] if sent < body_size else [], [], 1.0)
            if readable:
                break
            if writable:
                try:
                    sent += sock.send(block[:min(chunk, body_size - sent)])
                except (BrokenPipeError, ConnectionResetError, BlockingIOError):
                    pass
        sock.setblocking(True)
        sock.settimeout(10)
        return _status(sock), sent, time.monotonic() - start
    finally:
        sock.close()


def _status(sock: socket.socket) -> int | None:
    try:
        first = sock.recv(64)
    except (ConnectionResetError, socket.timeout):
        return None
    parts = first.split(b" ")
    return int(parts[1]) if first.startswith(b"HTTP/") and len(parts) > 1 else None
