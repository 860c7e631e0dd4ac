"""The agent sits below the pipeline (which profiles through it) and above runtimes and profile; the
host side (client) needs neither FastAPI nor uvicorn."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import deploykit

AGENT = Path(deploykit.__file__).parent / "agent"


def test_the_agent_never_imports_the_pipeline_or_the_cli():
    for path in AGENT.glob("*.py"):
        text = path.read_text()
        assert "deploykit.pipeline" not in text and "deploykit.cli" not in text, path


def test_the_client_side_imports_no_server_stack():
    probe = ("import sys, deploykit.agent.client, deploykit.agent.store, deploykit.agent.wire; "
             "print(' '.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                check=True).stdout.split())
    assert not loaded & {"fastapi", "uvicorn", "starlette", "torch"}, loaded & {"fastapi", "uvicorn", "torch"}
