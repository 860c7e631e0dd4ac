"""One meta-test per registry: the registry lists every module that registers into it (and imports them
itself, so what is registered never depends on import order), and names each item as its users call it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import deploykit
import deploykit.passes
from deploykit.passes.registry import PASSES
from deploykit.pipeline.targets import TARGETS
from deploykit.zoo import MODELS

PACKAGE = Path(deploykit.__file__).parent
REGISTRIES = {"register_model": ("deploykit.zoo", "MODELS"), "register_pass": ("deploykit.passes.registry", "PASSES"),
              "register_target": ("deploykit.pipeline.targets", "TARGETS")}


def modules_calling(register: str) -> set[str]:
    """Every module that calls `register(...)` (as a decorator or not), read with ast."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == register:
                found.add(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
    return found


@pytest.mark.parametrize("decorator", sorted(REGISTRIES))
def test_the_registry_lists_every_module_that_registers_into_it(decorator):
    module, name = REGISTRIES[decorator]
    registry = getattr(__import__(module, fromlist=[name]), name)
    assert modules_calling(decorator) == set(registry.members)


@pytest.mark.parametrize("decorator", sorted(REGISTRIES))
def test_a_fresh_interpreter_finds_every_member_on_first_lookup(decorator):
    """No other import first: the lookup itself loads the members (`prune_channels` once depended on it)."""
    module, name = REGISTRIES[decorator]
    expected = getattr(__import__(module, fromlist=[name]), name).names()
    code = f"from {module} import {name}; print(' '.join({name}.names()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == expected and out


def test_every_pass_is_registered_under_its_public_function():
    for name in PASSES.names():
        assert getattr(deploykit.passes, name) is PASSES.get(name).public, name


def test_every_registered_model_belongs_to_a_listed_family():
    assert {f"deploykit.zoo.{MODELS.get(n).family}" for n in MODELS.names()} == set(MODELS.members)


def test_every_target_is_named_after_its_module():
    assert set(TARGETS.names()) == {m.rsplit(".", 1)[-1] for m in TARGETS.members}


def test_a_registry_loads_its_members_once_and_only_when_asked(tmp_path, monkeypatch):
    (tmp_path / "probe_registry.py").write_text(
        "from deploykit.core.registry import Registry\nPROBE = Registry('probe', members=('probe_member',))\n")
    (tmp_path / "probe_member.py").write_text("from probe_registry import PROBE\nPROBE.add('a', 1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from probe_registry import PROBE

    assert "probe_member" not in sys.modules  # not imported with the registry
    assert PROBE.names() == ["a"] and PROBE.get("a") == 1 and len(PROBE) == 1  # a second import would raise
    for name in ("probe_registry", "probe_member"):
        monkeypatch.delitem(sys.modules, name)
