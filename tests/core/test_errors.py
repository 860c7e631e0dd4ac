"""One wording for a missing backend: errors and runtime checks name the same pip command, and a backend
deploykit itself depends on (onnxruntime) is never sent to an extra that does not exist."""

import ast
import tomllib
from pathlib import Path

import pytest

from deploykit import runtimes
from deploykit.core.errors import DeployKitError, import_backend, install_hint, missing_extra

EXTRAS = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_a_missing_backend_names_its_extra_in_the_error_and_the_runtime_check():
    with pytest.raises(DeployKitError) as info:
        import_backend("deploykit_no_such_backend", "litert", package="no-such")
    assert info.value.message == "no-such is not installed" and info.value.fix == 'pip install "deploykit[litert]"'
    assert runtimes._missing("deploykit_no_such_backend", "litert")() == \
        'deploykit_no_such_backend is not installed (pip install "deploykit[litert]")'


def test_a_dependency_of_deploykit_itself_names_no_extra():
    assert "deploykit[" not in missing_extra("onnxruntime", None).fix
    assert "deploykit[" not in install_hint("onnxruntime", None)


def test_every_extra_the_code_names_exists():
    """Each `import_backend` / `missing_extra` / `_missing` call's extra is one pyproject.toml declares."""
    package = Path(runtimes.__file__).parents[1]
    named = {}
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            name = getattr(getattr(node, "func", None), "id", None)
            if isinstance(node, ast.Call) and name in ("import_backend", "missing_extra", "_missing") \
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
                named[f"{path.name}:{node.lineno}"] = node.args[1].value
    assert len(named) >= 10
    assert {where: extra for where, extra in named.items() if extra is not None and extra not in EXTRAS} == {}
