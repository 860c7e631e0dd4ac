"""Measurements are serialised: 20 concurrent requests never overlap on the device, and each gets its
result, or (past the queue timeout) a clear 503 busy answer; none crashes, none is lost."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from agent_helpers import agent_thread

from deploykit.agent import work
from deploykit.core.errors import DeployKitError

REQUESTS = 20


@pytest.fixture
def overlap_probe(monkeypatch):
    """Wrap the measurement so it records how many ran at once (and takes `delay` s at least)."""
    state = {"active": 0, "peak": 0, "delay": 0.0}
    guard = threading.Lock()
    original = work.measure

    def recording(*args):
        with guard:
            state["active"] += 1
            state["peak"] = max(state["peak"], state["active"])
        try:
            time.sleep(state["delay"])
            return original(*args)
        finally:
            with guard:
                state["active"] -= 1

    monkeypatch.setattr(work, "measure", recording)
    return state


def _loaded(agent, tiny_onnx) -> str:
    with agent.client() as client:
        sha = client.ensure_artifact(tiny_onnx)
        return client.load(sha, {"runtime": "onnxruntime", "threads": 1})["model"]


def _measure(agent, model: str) -> httpx.Response:
    body = {"items": [{"model": model, "shape": [1, 3, 8, 8]}], "runs": 5, "warmup": 1}
    return httpx.post(f"{agent.url}/measure", json=body, headers=agent.headers, timeout=120)


def test_twenty_concurrent_measurements_all_succeed_one_at_a_time(tmp_path, tiny_onnx, overlap_probe):
    overlap_probe["delay"] = 0.02
    with agent_thread(tmp_path / "store", queue_timeout_s=120) as agent:
        model = _loaded(agent, tiny_onnx)
        with ThreadPoolExecutor(REQUESTS) as pool:
            responses = list(pool.map(lambda _: _measure(agent, model), range(REQUESTS)))
    assert [r.status_code for r in responses] == [200] * REQUESTS
    for response in responses:
        (stats,) = response.json()["latency"]
        assert stats["runs"] == 5 and stats["p50_ms"] > 0
    assert overlap_probe["peak"] == 1


def test_past_the_queue_timeout_requests_get_a_clear_busy_answer(tmp_path, tiny_onnx, overlap_probe):
    overlap_probe["delay"] = 0.3
    with agent_thread(tmp_path / "store", queue_timeout_s=0.5) as agent:
        model = _loaded(agent, tiny_onnx)
        with ThreadPoolExecutor(REQUESTS) as pool:
            responses = list(pool.map(lambda _: _measure(agent, model), range(REQUESTS)))
        codes = [r.status_code for r in responses]
        assert set(codes) == {200, 503} and len(codes) == REQUESTS
        busy = next(r for r in responses if r.status_code == 503)
        assert busy.json()["detail"]["error"].startswith("busy") and busy.headers["retry-after"]
        assert all(r.json()["latency"][0]["runs"] == 5 for r in responses if r.status_code == 200)
        assert httpx.get(f"{agent.url}/info", headers=agent.headers).json()["busy"] is False
        assert _measure(agent, model).status_code == 200, "the agent still works afterwards"
    assert overlap_probe["peak"] == 1


def test_the_client_retries_busy_answers_a_bounded_number_of_times(tmp_path, tiny_onnx, overlap_probe):
    overlap_probe["delay"] = 0.3
    with agent_thread(tmp_path / "store", queue_timeout_s=0.1) as agent:
        model = _loaded(agent, tiny_onnx)
        blocker = threading.Thread(target=_measure, args=(agent, model))
        blocker.start()
        time.sleep(0.1)
        with agent.client(retries=4, backoff_s=0.05) as patient:
            assert patient.measure([(model, [1, 3, 8, 8])], runs=2, warmup=0)[0]["runs"] == 2
        blocker.join()
        blocker = threading.Thread(target=_measure, args=(agent, model))
        overlap_probe["delay"] = 2.0
        blocker.start()
        time.sleep(0.2)
        with agent.client(retries=0) as impatient, pytest.raises(DeployKitError, match="503.*busy"):
            impatient.measure([(model, [1, 3, 8, 8])], runs=2, warmup=0)
        blocker.join()
