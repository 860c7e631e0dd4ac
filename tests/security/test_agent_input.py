"""Bad input against a real agent process (issue 15, items 9 and 10): a foreign --store is refused, not
swept; totals are capped, lying headers and manifests are 4xx (never 500), thread counts are bounded, and
/health tells a stranger nothing but liveness."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile

import httpx
import numpy as np
import pytest

from tests.agent.agent_helpers import write_tiny_onnx
from tests.security.conftest import TOKEN, UPLOAD_CAP_MB

pytestmark = pytest.mark.timeout(180)  # a regression must fail, not hang the suite


def test_a_foreign_folder_is_refused_as_store_and_left_intact(tmp_path):
    """`--store DIR` on an existing folder deleted its tmp/, objects/ and engines/ (item 9)."""
    repo = tmp_path / "repo"
    files = {"HEAD": "ref: refs/heads/main\n", "objects/ab/cdef": "blob", "tmp/x": "mine", "engines/y": "v8"}
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k != "DEPLOYKIT_DEBUG"}
    done = subprocess.run([sys.executable, "-m", "deploykit", "agent", "serve", "--port", "0", "--store", str(repo),
                           "--token-file", str(token)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and "not an agent store" in done.stderr, done.stderr
    assert {str(p.relative_to(repo)): p.read_text() for p in repo.rglob("*") if p.is_file()} == files


def _any_size_onnx(path):
    """1x1 conv, global pool: runs at any input size (so the pre-fix agent really measured what it took)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("GlobalAveragePool", ["c"], ["p"]),
         helper.make_node("Flatten", ["p"], ["y"])], "any-size",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def model(served, tmp_path_factory) -> str:
    path = _any_size_onnx(tmp_path_factory.mktemp("any") / "any.onnx")
    with served.client() as client:
        return client.load(client.ensure_artifact(path), {"runtime": "onnxruntime", "threads": 1})["model"]


def test_measure_caps_the_total_not_each_item(served, model):
    """16 items each under the cap made 16 x the cap (item 10)."""
    assert 4 * 3 * 512 * 512 < UPLOAD_CAP_MB * 2**20 < 16 * 4 * 3 * 512 * 512
    body = {"items": [{"model": model, "shape": [1, 3, 512, 512]}] * 16, "runs": 1}
    response = httpx.post(f"{served.url}/measure", json=body, headers=served.headers, timeout=60)
    assert response.status_code == 422 and "add up to more than the upload limit" in response.text


def test_an_npy_header_claiming_a_huge_shape_is_400_not_500(served, model):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (1, 3, 100_000, 100_000)})
    response = httpx.post(f"{served.url}/models/{model}/run", content=header.getvalue() + b"\0" * 64,
                          headers=served.headers, timeout=60)
    assert response.status_code == 400 and "the header says shape [1, 3, 100000, 100000]" in response.text


def test_an_archive_whose_manifest_is_not_an_object_is_422_not_500(served):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("artifact/plan.json", b"{}"), ("manifest.json", b"[1, 2]")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = buffer.getvalue()
    response = httpx.put(f"{served.url}/artifacts/{hashlib.sha256(blob).hexdigest()}", content=blob,
                         headers=served.headers, timeout=60)
    assert response.status_code == 422 and "not a deploykit manifest" in response.text


def test_threads_beyond_the_devices_cores_are_refused(served, tmp_path):
    path = write_tiny_onnx(tmp_path / "t.onnx", seed=3)
    with served.client() as client:
        sha = client.ensure_artifact(path)
    response = httpx.post(f"{served.url}/models", json={"sha256": sha, "runtime": "onnxruntime", "threads": 1024},
                          headers=served.headers, timeout=60)
    assert response.status_code == 422 and "logical cores" in response.text


def test_health_tells_a_stranger_only_that_the_agent_is_alive(served):
    health = httpx.get(f"{served.url}/health", timeout=10)
    assert health.json() == {"ok": True, "protocol": 1}
    text = health.text.lower()
    assert not any(word in text for word in ("linux", "cpu", "version", "python", "onnxruntime"))
    assert httpx.get(f"{served.url}/info", timeout=10).status_code == 401
