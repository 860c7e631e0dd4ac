"""A real agent on loopback refuses what it must: no token, a wrong token, traversal-like names, bad
hashes, oversized and malformed bodies all get a 4xx, and nothing is written to the store."""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import socket
import tarfile
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
from agent_helpers import TOKEN, agent_thread

from deploykit.agent.store import MARKER
from deploykit.agent.wire import npy_bytes

ZERO_SHA = "0" * 64


def _raw(agent, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> int:
    """A request whose path goes on the wire byte for byte (httpx would normalise `..` and escapes)."""
    url = urlparse(agent.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for key, value in {**agent.headers, "Content-Length": str(len(body)), **(headers or {})}.items():
            conn.putheader(key, value)
        conn.endheaders(body)
        return conn.getresponse().status
    finally:
        conn.close()


def _stored_files(agent) -> list[str]:
    """Every file in the store but the agent's lock file."""
    return sorted(str(p.relative_to(agent.store)) for p in agent.store.rglob("*")
                  if p.is_file() and p.name not in ("agent.lock", MARKER))


def _load_tiny(agent, tiny_onnx: Path) -> str:
    with agent.client() as client:
        sha = client.ensure_artifact(tiny_onnx)
        return client.load(sha, {"runtime": "onnxruntime", "threads": 1})["model"]


def test_health_needs_no_token_and_says_only_that_it_is_alive(agent):
    """Without a token /health showed OS, kernel, CPU and versions (issue 15, item 10): liveness only now;
    what the device is and runs is for clients with the token."""
    assert httpx.get(f"{agent.url}/health").json() == {"ok": True, "protocol": 1}
    info = httpx.get(f"{agent.url}/info", headers=agent.headers).json()
    assert info["runtimes"]["onnxruntime"]["available"] and info["runtimes"]["onnxruntime"]["version"]
    assert {"os", "cpu", "accelerators", "machine"} <= set(info["device"])
    assert info["max_upload_bytes"] == 1024 * 2**20


ENDPOINTS = [("GET", "/info"), ("HEAD", f"/artifacts/{ZERO_SHA}"), ("GET", f"/artifacts/{ZERO_SHA}"),
             ("PUT", f"/artifacts/{hashlib.sha256(b'x').hexdigest()}"), ("POST", "/models"),
             ("POST", f"/models/{ZERO_SHA}/run"), ("POST", "/measure")]
BAD_AUTH = {"missing": None, "wrong": f"Bearer {TOKEN[:-1]}x", "wrong scheme": f"Basic {TOKEN}",
            "prefix": f"Bearer {TOKEN[:8]}", "empty": "Bearer"}


@pytest.mark.parametrize("method,path", ENDPOINTS, ids=[f"{m} {p[:20]}" for m, p in ENDPOINTS])
def test_every_endpoint_but_health_needs_the_token(agent, method, path):
    for name, header in BAD_AUTH.items():
        headers = {} if header is None else {"Authorization": header}
        response = httpx.request(method, f"{agent.url}{path}", headers=headers, content=b"x")
        assert response.status_code == 401, name
        assert response.headers.get("www-authenticate") == "Bearer"
    assert _stored_files(agent) == []


TRAVERSALS = ["/artifacts/../../etc/passwd", "/artifacts/..%2F..%2Fetc%2Fpasswd",
              "/artifacts/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/artifacts/%252e%252e%252fetc%252fpasswd",
              "/artifacts/..", "/artifacts/%2e%2e", f"/artifacts/{'A' * 64}", f"/artifacts/{'g' * 64}",
              f"/artifacts/{'0' * 63}", f"/artifacts/{'0' * 65}", f"/artifacts/{ZERO_SHA}%00",
              f"/artifacts/{ZERO_SHA}%0a", f"/artifacts/{ZERO_SHA}/..%2f..%2fevil",
              "/artifacts/%2fetc%2fpasswd"]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_like_names_get_4xx_and_write_nothing(agent, tmp_path, path):
    for method in ("PUT", "HEAD", "GET"):
        status = _raw(agent, method, path, b"payload" if method == "PUT" else b"")
        assert 400 <= status < 500, (method, status)
    assert 400 <= _raw(agent, "POST", path.replace("/artifacts/", "/models/") + "/run", npy_bytes(
        np.zeros((1, 3, 8, 8), np.float32))) < 500
    assert _stored_files(agent) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    assert not any(p.name in ("passwd", "evil") for p in tmp_path.rglob("*"))


def test_upload_stores_by_the_computed_sha256_only(agent, tiny_onnx):
    data = tiny_onnx.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    wrong = hashlib.sha256(data + b"!").hexdigest()
    assert httpx.put(f"{agent.url}/artifacts/{wrong}", content=data, headers=agent.headers).status_code == 400
    assert _stored_files(agent) == []
    assert httpx.put(f"{agent.url}/artifacts/{sha}", content=data, headers=agent.headers).status_code == 201
    assert httpx.put(f"{agent.url}/artifacts/{sha}", content=data, headers=agent.headers).status_code == 200
    assert httpx.head(f"{agent.url}/artifacts/{sha}", headers=agent.headers).status_code == 200
    info = httpx.get(f"{agent.url}/artifacts/{sha}", headers=agent.headers).json()
    assert info == {"sha256": sha, "kind": "onnx", "size_bytes": len(data)}
    assert _stored_files(agent) == [f"objects/{sha}/artifact.onnx", f"objects/{sha}/meta.json"]
    assert (agent.store / "objects" / sha / "artifact.onnx").read_bytes() == data


def _chunks(total: int, size: int = 4096):
    for start in range(0, total, size):
        yield os.urandom(min(size, total - start))


def test_oversized_uploads_are_refused_while_streaming(tmp_path):
    with agent_thread(tmp_path / "store", max_upload_mb=0.05) as agent:  # 52 KiB
        big = os.urandom(200_000)
        sha = hashlib.sha256(big).hexdigest()
        declared = httpx.put(f"{agent.url}/artifacts/{sha}", content=big, headers=agent.headers)
        assert declared.status_code == 413
        # no Content-Length: chunked, so only counting the bytes as they arrive can stop it
        streamed = httpx.put(f"{agent.url}/artifacts/{'1' * 64}", content=_chunks(200_000),
                             headers=agent.headers)
        assert streamed.status_code == 413 and "limit" in streamed.json()["detail"]["error"]
        batch = npy_bytes(np.zeros((1, 3, 128, 128), np.float32))
        assert httpx.post(f"{agent.url}/models/{ZERO_SHA}/run", content=iter([batch]),
                          headers=agent.headers).status_code in (404, 413)
        assert _stored_files(agent) == []


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malformed_bodies_get_4xx(agent, tiny_onnx, tmp_path):
    model = _load_tiny(agent, tiny_onnx)
    before = _stored_files(agent)
    run = f"{agent.url}/models/{model}/run"
    marker = tmp_path / "pwned"
    pickled = io.BytesIO()
    np.save(pickled, np.array([_Exploit(marker)], dtype=object), allow_pickle=True)
    bodies = {"pickle": pickled.getvalue(), "garbage": b"\x93NUMPY garbage", "empty": b"",
              "float64": npy_bytes(np.zeros((1, 3, 8, 8))), "3-d": npy_bytes(np.zeros((3, 8, 8), np.float32)),
              "zero-size": npy_bytes(np.zeros((0, 3, 8, 8), np.float32))}
    for name, body in bodies.items():
        response = httpx.post(run, content=body, headers=agent.headers)
        assert response.status_code == 400, name
    assert not marker.exists(), "a pickle in a request body must never be loaded"
    no_repeat = httpx.post(run, params={"repeat": 0}, content=bodies["3-d"], headers=agent.headers)
    assert no_repeat.status_code == 422
    json_bodies = [{"sha256": ZERO_SHA}, {"sha256": "../x", "runtime": "onnxruntime"},
                   {"sha256": ZERO_SHA, "runtime": "onnxruntime", "path": "/etc/passwd"},
                   {"sha256": ZERO_SHA, "runtime": "torch"},
                   {"sha256": ZERO_SHA, "runtime": "onnxruntime", "threads": 0}]
    for body in json_bodies:
        status = httpx.post(f"{agent.url}/models", json=body, headers=agent.headers).status_code
        assert 400 <= status < 500, body
    assert httpx.post(f"{agent.url}/models", json={"sha256": ZERO_SHA, "runtime": "onnxruntime"},
                      headers=agent.headers).status_code == 404
    assert httpx.post(f"{agent.url}/models", content=b"{not json", headers={
        **agent.headers, "Content-Type": "application/json"}).status_code == 422
    for body in [{"items": [], "runs": 1}, {"items": [{"model": model, "shape": [1, 3, 8, 8]}], "runs": 0},
                 {"items": [{"model": model, "shape": [1, 3, 8]}], "runs": 1},
                 {"items": [{"model": model, "shape": [1, 3, 0, 8]}], "runs": 1},
                 {"items": [{"model": model, "shape": [4096, 3, 4096, 4096]}], "runs": 1},
                 {"items": [{"model": "../" + model, "shape": [1, 3, 8, 8]}], "runs": 1},
                 {"items": [{"model": model, "shape": [1, 3, 8, 8]}], "runs": 10**9}]:
        status = httpx.post(f"{agent.url}/measure", json=body, headers=agent.headers).status_code
        assert 400 <= status < 500, body
    assert _stored_files(agent) == before


def _evil_tar(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        ok = tarfile.TarInfo("artifact/Manifest.json")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"{}"))
        evil = tarfile.TarInfo(name)
        evil.type, evil.linkname = kind, link
        data = b"owned" if kind == tarfile.REGTYPE else None
        if data:
            evil.size = len(data)
        tar.addfile(evil, io.BytesIO(data) if data else None)
    return buffer.getvalue()


@pytest.mark.parametrize("archive", [
    _evil_tar("../../evil"), _evil_tar("/tmp/evil-absolute"), _evil_tar("artifact/../../../evil"),
    _evil_tar("artifact/link", tarfile.SYMTYPE, "/etc/passwd"), _evil_tar("artifact/dev", tarfile.BLKTYPE),
    _evil_tar("artifact/hard", tarfile.LNKTYPE, "../../../etc/passwd")],
    ids=["dotdot", "absolute", "nested-dotdot", "symlink", "device", "hardlink"])
def test_unsafe_archives_are_refused_and_leave_nothing(agent, tmp_path, archive):
    sha = hashlib.sha256(archive).hexdigest()
    response = httpx.put(f"{agent.url}/artifacts/{sha}", content=archive, headers=agent.headers)
    assert response.status_code == 422, response.text
    assert _stored_files(agent) == []
    assert not any(p.name.startswith("evil") for p in tmp_path.parent.rglob("evil*"))


def _partial_put(agent, total: int, sent: int) -> socket.socket:
    url = urlparse(agent.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=30)
    sock.sendall((f"PUT /artifacts/{ZERO_SHA} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {agent.token}\r\n"
                  f"Content-Length: {total}\r\n\r\n").encode() + os.urandom(sent))
    return sock


def _wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_stalled_upload_times_out_and_leaves_nothing(tmp_path):
    with agent_thread(tmp_path / "store", idle_timeout_s=0.5) as agent:
        sock = _partial_put(agent, 100_000, 1000)
        try:
            status = sock.recv(100).split(b" ")[1]
        finally:
            sock.close()
        assert status == b"408"
        _wait_until(lambda: _stored_files(agent) == [])


def test_an_aborted_upload_leaves_nothing(tmp_path):
    with agent_thread(tmp_path / "store") as agent:
        sock = _partial_put(agent, 100_000, 5000)
        _wait_until(lambda: any(agent.store.glob("tmp/upload-*")))
        sock.close()
        _wait_until(lambda: _stored_files(agent) == [])
        assert httpx.head(f"{agent.url}/artifacts/{ZERO_SHA}", headers=agent.headers).status_code == 404
