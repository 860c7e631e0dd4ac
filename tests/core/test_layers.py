"""Layering: core stays free of torch; the CLI starts without importing torch or any backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import deploykit

PACKAGE = Path(deploykit.__file__).parent
HEAVY = ("torch", "onnx", "onnxruntime", "coremltools", "tensorrt", "openvino", "litert_torch", "ai_edge_litert",
         "executorch")


def _imports_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_core_imports_no_heavy_module():
    modules = [f"deploykit.core.{p.stem}" for p in (PACKAGE / "core").glob("*.py") if p.stem != "__init__"]
    loaded = _imports_after("\n".join(f"import {m}" for m in modules))
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_cli_app_imports_no_heavy_module():
    loaded = _imports_after("import deploykit.cli as c; c.app_registered = c.app")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_lower_layers_never_import_the_cli():
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name in ("cli",) or path.name == "__main__.py":
            continue
        assert "deploykit.cli" not in path.read_text(), f"{path} imports the CLI layer"
