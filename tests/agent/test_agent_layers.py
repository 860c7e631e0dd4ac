"""The host side of the agent (client) needs neither FastAPI nor uvicorn. (Its place among the layers, below
the pipeline and above runtimes and profile, is tests/test_architecture.py's.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import deploykit

AGENT = Path(deploykit.__file__).parent / "agent"


def test_the_client_side_imports_no_server_stack():
    probe = ("import sys, deploykit.agent.client, deploykit.agent.store, deploykit.agent.wire; "
             "print(' '.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                check=True).stdout.split())
    assert not loaded & {"fastapi", "uvicorn", "starlette", "torch"}, loaded & {"fastapi", "uvicorn", "torch"}
