"""`deploykit agent serve` as a real process: killed (SIGKILL) while a slow client streams an artifact,
then restarted on the same store, it serves no partial artifact, has swept the leftovers, keeps what was
complete, and takes the upload again."""

from __future__ import annotations

import hashlib
import os
import socket
import time

import httpx
import pytest
from agent_helpers import TOKEN, agent_process, agent_thread, free_port

from deploykit.core.errors import DeployKitError

SIZE = 4 << 20  # 4 MiB, sent in 64 KiB pieces


def _start_slow_upload(url: str, token: str, data: bytes, sent: int) -> socket.socket:
    """Open a PUT of `data` and send only its first `sent` bytes (the rest never comes)."""
    host, port = url.removeprefix("http://").split(":")
    sha = hashlib.sha256(data).hexdigest()
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = (f"PUT /artifacts/{sha} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {len(data)}\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    sock.sendall(head)
    for start in range(0, sent, 1 << 16):
        sock.sendall(data[start:min(start + (1 << 16), sent)])
        time.sleep(0.01)
    return sock


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _partial_bytes(store) -> int:
    return sum(p.stat().st_size for p in (store / "tmp").glob("upload-*.part"))


def test_killing_the_agent_mid_upload_leaves_the_store_consistent(tmp_path, tiny_onnx):
    store, token_file = tmp_path / "store", tmp_path / "token"
    token_file.write_text("crash-test-token-0123456789\n")
    token_file.chmod(0o600)
    data = os.urandom(SIZE)
    sha = hashlib.sha256(data).hexdigest()
    complete = tiny_onnx.read_bytes()
    complete_sha = hashlib.sha256(complete).hexdigest()

    with agent_process(store, token_file, free_port()) as agent:
        headers = agent.headers
        stored = httpx.put(f"{agent.url}/artifacts/{complete_sha}", content=complete, headers=headers)
        assert stored.status_code == 201
        sock = _start_slow_upload(agent.url, agent.token, data, SIZE // 2)
        _wait_for(lambda: _partial_bytes(store) > 0)
        assert httpx.head(f"{agent.url}/artifacts/{sha}", headers=headers).status_code == 404, \
            "not before it is whole"
        agent.process.kill()
        agent.process.wait(timeout=30)
        sock.close()
    assert _partial_bytes(store) > 0, "the kill left a partial upload (in tmp/, never in objects/)"
    assert sorted(p.name for p in (store / "objects").iterdir()) == [complete_sha]

    with agent_process(store, token_file, free_port()) as agent:
        headers = agent.headers
        assert list((store / "tmp").iterdir()) == [], "start sweeps the leftovers"
        assert httpx.head(f"{agent.url}/artifacts/{sha}", headers=headers).status_code == 404
        assert httpx.post(f"{agent.url}/models", json={"sha256": sha, "runtime": "onnxruntime"},
                          headers=headers).status_code == 404
        assert httpx.head(f"{agent.url}/artifacts/{complete_sha}", headers=headers).status_code == 200, \
            "what was complete survives the restart"
        assert httpx.put(f"{agent.url}/artifacts/{sha}", content=data, headers=headers).status_code == 201
        assert (store / "objects" / sha / "artifact.onnx").read_bytes() == data
        assert list((store / "tmp").iterdir()) == []


def test_a_second_agent_on_the_same_store_is_refused(tmp_path):
    """It would sweep the first one's uploads in progress."""
    from deploykit.agent.server import ServeConfig, create_app

    with agent_thread(tmp_path / "store"):
        with pytest.raises(DeployKitError, match="another agent is using the store"):
            create_app(ServeConfig(store=tmp_path / "store", token=TOKEN))
