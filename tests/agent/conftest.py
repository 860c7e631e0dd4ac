"""Fixtures: a real agent on loopback (a uvicorn thread with a fresh store) and a tiny ONNX artifact."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterator

import pytest
from agent_helpers import RunningAgent, agent_thread, write_tiny_manifest, write_tiny_onnx

if not all(importlib.util.find_spec(name) for name in ("fastapi", "uvicorn", "httpx")):
    # all but the store's tests need pip install "deploykit[agent]"
    collect_ignore = [p.name for p in Path(__file__).parent.glob("test_*.py") if p.name != "test_agent_store.py"]


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[RunningAgent]:
    with agent_thread(tmp_path / "store") as running:
        yield running


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    path = write_tiny_onnx(tmp_path / "tiny.onnx")
    write_tiny_manifest(path)
    return path
