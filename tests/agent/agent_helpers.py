"""A real agent on 127.0.0.1 (a uvicorn server thread, or a subprocess), and small artifacts to send it.

Imported by the tests as `agent_helpers` (a unique name: `conftest` is taken by tests/conftest.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

TOKEN = "test-token-0123456789abcdef"
START_TIMEOUT_S = 60.0


@dataclass
class RunningAgent:
    url: str
    token: str
    store: Path
    app: object = None
    process: subprocess.Popen | None = None

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self, **kwargs):
        from deploykit.agent.client import AgentClient

        return AgentClient(self.url, self.token, **{"retries": 0, **kwargs})


@contextlib.contextmanager
def agent_thread(store: Path, **config) -> Iterator[RunningAgent]:
    """The agent app served by uvicorn in a thread, on a socket bound here (no free-port race)."""
    import uvicorn

    from deploykit.agent.server import ServeConfig, create_app, uvicorn_config

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = ServeConfig(store=store, token=TOKEN, port=port, **config)
    app = create_app(settings)
    server = uvicorn.Server(uvicorn_config(app, settings, log_level="warning"))  # the agent's own settings
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the agent thread did not start")
        time.sleep(0.02)
    try:
        yield RunningAgent(f"http://127.0.0.1:{port}", TOKEN, store, app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def agent_process(store: Path, token_file: Path, port: int, *extra: str, scheme: str = "http",
                  verify=True) -> Iterator[RunningAgent]:
    """`deploykit agent serve` as a subprocess; killed (SIGKILL) when the block ends if still running."""
    env = {k: v for k, v in os.environ.items() if k != "DEPLOYKIT_DEBUG"}
    process = subprocess.Popen([sys.executable, "-m", "deploykit", "agent", "serve", "--port", str(port),
                                "--store", str(store), "--token-file", str(token_file), *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    token = token_file.read_text().strip()
    running = RunningAgent(f"{scheme}://127.0.0.1:{port}", token, store, process=process)
    try:
        wait_healthy(running, verify=verify)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        process.stdout.close()


def wait_healthy(running: RunningAgent, *, verify=True) -> None:
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if running.process is not None and running.process.poll() is not None:
            raise RuntimeError(f"the agent exited: {running.process.stdout.read().decode(errors='replace')}")
        try:
            if httpx.get(f"{running.url}/health", timeout=2, verify=verify).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the agent did not answer /health in time")


# --- artifacts ------------------------------------------------------------------------------------

TINY_SIZE = 8


def write_tiny_onnx(path: Path, *, batch: int | str = "N", seed: int = 0) -> Path:
    """Conv-ReLU-pool-linear on 3x8x8 inputs, 10 classes: an artifact ONNX Runtime loads in milliseconds."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
               "b": rng.standard_normal(4).astype(np.float32),
               "fc_w": rng.standard_normal((10, 4)).astype(np.float32),
               "fc_b": rng.standard_normal(10).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"]),
             helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
             helper.make_node("Flatten", ["pool"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, TINY_SIZE, TINY_SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def write_tiny_manifest(artifact: Path) -> None:
    """A manifest with the tiny model's preprocessing (no float original: a random init)."""
    from deploykit.core.manifest import Manifest, manifest_path
    from deploykit.core.preprocess import Preprocess

    Manifest(model="tiny", target="onnx", artifact=artifact.name, weights_sha256="random-init",
             preprocess=Preprocess(input_size=TINY_SIZE, resize=None).to_dict(),
             input_shape=[1, 3, TINY_SIZE, TINY_SIZE]).finalize(artifact).write(manifest_path(artifact))
