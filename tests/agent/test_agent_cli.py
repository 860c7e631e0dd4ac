"""`deploykit agent serve` as a user starts it: loopback by default, a token always, TLS on request."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import ssl
import subprocess
import sys
import threading

import httpx
import pytest
from agent_helpers import agent_process, free_port

ZERO_SHA = "0" * 64


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DEPLOYKIT_DEBUG"}
    return subprocess.run([sys.executable, "-m", "deploykit", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_non_loopback_host_needs_a_token_file(tmp_path):
    result = run_cli("agent", "serve", "--host", "0.0.0.0", "--store", str(tmp_path / "store"))
    assert result.returncode == 2 and "--token-file" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "store").exists(), "refused before anything starts"


def test_a_short_or_missing_token_file_is_refused(tmp_path):
    short = tmp_path / "short"
    short.write_text("abc\n")
    for token_file in (short, tmp_path / "missing"):
        result = run_cli("agent", "serve", "--token-file", str(token_file), "--store",
                         str(tmp_path / "store"), "--port", str(free_port()))
        assert result.returncode == 2 and "token" in result.stderr and "Traceback" not in result.stderr


def _lines(stream, out: queue.Queue) -> None:
    for line in iter(stream.readline, b""):
        out.put(line.decode(errors="replace").rstrip("\n"))


def test_without_a_token_file_a_token_is_generated_and_printed_once(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DEPLOYKIT_DEBUG"}
    process = subprocess.Popen([sys.executable, "-m", "deploykit", "agent", "serve", "--port", str(port),
                                "--store", str(tmp_path / "store")], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, env=env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(process.stdout, lines), daemon=True).start()
    try:
        seen = []
        while not seen or not seen[-1].startswith("token"):
            seen.append(lines.get(timeout=60))
        token = lines.get(timeout=10).strip()
        assert len(token) >= 32 and f"http://127.0.0.1:{port}" in seen[0]
        url = f"http://127.0.0.1:{port}/artifacts/{ZERO_SHA}"
        for _ in range(100):
            try:
                response = httpx.head(url, headers={"Authorization": f"Bearer {token}"}, timeout=2)
                break
            except httpx.TransportError:
                threading.Event().wait(0.1)
        assert response.status_code == 404
        assert httpx.head(url, timeout=2).status_code == 401
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        process.stdout.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a self-signed certificate")
def test_tls_serves_https_only(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    token_file = tmp_path / "token"
    token_file.write_text("tls-test-token-0123456789\n")
    trust = ssl.create_default_context(cafile=str(cert))
    port = free_port()
    with agent_process(tmp_path / "store", token_file, port, "--tls-cert", str(cert), "--tls-key", str(key),
                       scheme="https", verify=trust) as agent:
        with agent.client(verify=trust) as client:
            assert client.health()["ok"]
            assert not client.has(ZERO_SHA)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        with pytest.raises(httpx.ConnectError):  # not trusted without the certificate
            httpx.get(f"{agent.url}/health", timeout=5)


def test_every_command_module_imports_without_the_agent_extra_loaded():
    """`deploykit agent --help` works without importing FastAPI (it is imported only to serve)."""
    code = ("import sys; from deploykit.cli.app import _register_commands; _register_commands(); "
            "assert 'fastapi' not in sys.modules and 'uvicorn' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert "serve" in run_cli("agent", "--help").stdout
