"""Profiling through a real agent on loopback gives what profiling here gives: the same outputs (fp32
tolerance), the same accuracy, latency measured on the agent's side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from agent_helpers import agent_thread

from deploykit.core.devices import load_device
from deploykit.core.errors import DeployKitError
from deploykit.pipeline.profile import profile_artifacts
from deploykit.pipeline.runners import LOCAL

TOKEN_ENV = "DEPLOYKIT_TEST_AGENT_TOKEN"


def _device(tmp_path: Path, name: str, *, agent_url: str | None = None, batches=(1,)) -> Path:
    spec = {"description": "test", "location": "remote" if agent_url else "local", "runtime": "onnxruntime",
            "threads": 1, "batches": list(batches)}
    if agent_url:
        spec["agent"] = {"url": agent_url, "token_env": TOKEN_ENV}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _assert_same_profile(local, remote, agent_url: str) -> None:
    assert [r.name for r in local.rows] == [r.name for r in remote.rows]
    for here, there in zip(local.rows, remote.rows):
        assert (here.runtime_version, here.precision_used) == (there.runtime_version, there.precision_used)
        assert here.quality.n == there.quality.n and here.quality.inputs == there.quality.inputs
        assert (here.quality.top1, here.quality.top5) == (there.quality.top1, there.quality.top5)
        assert here.quality.agreement == there.quality.agreement
        if here.quality.cosine is not None:
            assert there.quality.cosine == pytest.approx(here.quality.cosine, abs=1e-9)
        timed = [(lat.batch, lat.runs) for lat in here.latency]
        assert timed == [(lat.batch, lat.runs) for lat in there.latency]
        assert all(lat.p50_ms is not None and lat.p50_ms > 0 for lat in there.latency)
        assert there.load_ms is not None and there.warmup_ms is not None
    assert remote.environment["agent"]["url"] == agent_url
    assert remote.environment["agent"]["runtimes"]["onnxruntime"]["available"]
    assert "agent" not in local.environment


def test_profile_through_the_agent_equals_a_local_profile(tmp_path, tiny_onnx, data_dir, monkeypatch):
    settings = {"data": data_dir / "cifar10" / "test", "limit": 64, "batches": [1, 4], "runs": 3, "warmup": 1}
    local = profile_artifacts([tiny_onnx], load_device(_device(tmp_path, "here")), **settings)
    with agent_thread(tmp_path / "store") as agent:
        monkeypatch.setenv(TOKEN_ENV, agent.token)
        device = load_device(_device(tmp_path, "there", agent_url=agent.url))
        remote = profile_artifacts([tiny_onnx], device, **settings)
        again = profile_artifacts([tiny_onnx], device, **settings)  # stored already: no second upload
        assert len(list((agent.store / "objects").iterdir())) == 1
    _assert_same_profile(local, remote, agent.url)
    assert remote.rows[0].quality.top1 is not None and again.rows[0].quality == remote.rows[0].quality
    assert "agent" in remote.rows[0].energy.source


def test_remote_outputs_equal_local_outputs(tmp_path, tiny_onnx, monkeypatch):
    from deploykit.agent.client import AgentRunner

    batch = np.random.default_rng(3).standard_normal((5, 3, 8, 8), dtype=np.float32)
    with agent_thread(tmp_path / "store") as agent:
        monkeypatch.setenv(TOKEN_ENV, agent.token)
        device = load_device(_device(tmp_path, "there", agent_url=agent.url))
        runner = AgentRunner.connect(device)
        remote, load_s = runner.load(tiny_onnx, device)
        local, _ = LOCAL.load(tiny_onnx, device)
        np.testing.assert_allclose(remote.run(batch), local.run(batch), rtol=1e-6, atol=1e-6)
        seconds, out = runner.warm_up(remote, batch, 3)
        np.testing.assert_array_equal(out, remote.run(batch))
        assert load_s > 0 and seconds > 0
        agent.app.state.agent.models.clear()  # as after an agent restart: the client loads it again
        np.testing.assert_allclose(remote.run(batch), local.run(batch), rtol=1e-6, atol=1e-6)
        agent.app.state.agent.models.clear()
        stats = runner.latency({"a": (remote, batch)}, runs=2, warmup=0)
        assert stats["a"].runs == 2


def test_an_unreachable_agent_names_the_url_and_the_fix(tmp_path, tiny_onnx, monkeypatch):
    from agent_helpers import free_port

    from deploykit.agent import client

    monkeypatch.setattr(client, "RETRIES", 1)
    monkeypatch.setattr(client, "BACKOFF_S", 0.01)
    monkeypatch.setenv(TOKEN_ENV, "whatever-token-123456")
    url = f"http://127.0.0.1:{free_port()}"
    device = load_device(_device(tmp_path, "gone", agent_url=url))
    with pytest.raises(DeployKitError) as info:
        profile_artifacts([tiny_onnx], device, runs=1, warmup=0)
    assert url in info.value.message and "after 2 attempts" in info.value.message
    assert "deploykit agent serve" in info.value.fix and TOKEN_ENV in info.value.fix


def test_token_problems_are_reported_before_anything_is_sent(tmp_path, tiny_onnx, monkeypatch):
    with agent_thread(tmp_path / "store") as agent:
        device = load_device(_device(tmp_path, "there", agent_url=agent.url))
        monkeypatch.delenv(TOKEN_ENV, raising=False)
        with pytest.raises(DeployKitError, match=f"{TOKEN_ENV} is not set"):
            profile_artifacts([tiny_onnx], device, runs=1, warmup=0)
        monkeypatch.setenv(TOKEN_ENV, "not-the-token-0123456789")
        with pytest.raises(DeployKitError, match="refused the token") as info:
            profile_artifacts([tiny_onnx], device, runs=1, warmup=0)
        assert TOKEN_ENV in info.value.fix
        assert list((agent.store / "objects").iterdir()) == []


def test_an_artifact_over_the_agents_limit_is_refused_by_the_client(tmp_path, tiny_onnx, monkeypatch):
    with agent_thread(tmp_path / "store", max_upload_mb=0.0001) as agent:  # 104 bytes
        monkeypatch.setenv(TOKEN_ENV, agent.token)
        device = load_device(_device(tmp_path, "there", agent_url=agent.url))
        with pytest.raises(DeployKitError, match="more than the agent") as info:
            profile_artifacts([tiny_onnx], device, runs=1, warmup=0)
        assert "--max-upload-mb" in info.value.fix


# --- resnet56_cifar, exported with its released weights ---------------------------------------------

@pytest.fixture(scope="module")
def resnet56_onnx(tmp_path_factory) -> Path:
    from deploykit.pipeline.export import ExportRequest, export
    from tests.conftest import DATA_DIR

    weights = DATA_DIR / "weights" / "cifar10_resnet" / "resnet56-4bfd9763.th"
    if not weights.is_file():
        pytest.skip(f"released weights not found at {weights} (set DEPLOYKIT_DATA)")
    out = tmp_path_factory.mktemp("resnet56")
    try:
        return export(ExportRequest(model="resnet56_cifar", weights=weights, out_dir=out)).artifact
    except DeployKitError:  # if the released weights do not load through export: a random init still compares
        return export(ExportRequest(model="resnet56_cifar", random_init=True, out_dir=out)).artifact


@pytest.mark.slow
def test_resnet56_profiled_through_the_agent_equals_local(tmp_path, resnet56_onnx, data_dir, monkeypatch):
    settings = {"data": data_dir / "cifar10" / "test", "limit": 96, "batches": [1], "runs": 3, "warmup": 1}
    local = profile_artifacts([resnet56_onnx], load_device(_device(tmp_path, "here")), **settings)
    with agent_thread(tmp_path / "store") as agent:
        monkeypatch.setenv(TOKEN_ENV, agent.token)
        device = load_device(_device(tmp_path, "there", agent_url=agent.url))
        remote = profile_artifacts([resnet56_onnx], device, **settings)
    _assert_same_profile(local, remote, agent.url)
    artifact = next(r for r in remote.rows if r.role == "artifact")
    if artifact.reference is not None:  # exported from the released weights: CIFAR-10 accuracy, not chance
        assert artifact.quality.top1 > 0.8 and artifact.quality.agreement > 0.95
