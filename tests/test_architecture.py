"""The layering, enforced on what the code imports, not on strings in it.

Every module's imports are read with `ast` (top-level ones and lazy ones inside functions alike, plus
`importlib.import_module("deploykit....")` with a constant name) and checked against `ALLOWED`: a layer imports
only from itself and the layers listed for it. Data flows one way (model -> passes -> export -> runtime ->
measurements -> report), so the table has no cycle, which a test checks too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import deploykit

PACKAGE = Path(deploykit.__file__).parent
ROOT = "deploykit"  # the package itself: __version__ and the lazy attributes (`deploykit.zoo`, ...)

# layer -> the layers it may import (besides itself). core is the floor; cli the roof.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "profile": {"core"},  # measurements of a model or a run: cost, latency, accuracy of logits, reports
    "data": {"core"},
    "zoo": {"core"},
    "passes": {"core", "profile"},  # prune_channels meets a MAC budget with profile's one cost model
    "export": {"core"},
    "runtimes": {"core"},
    "training": {"core", "data"},
    "agent": {"core", "profile", "runtimes"},
    "pipeline": {"core", "profile", "data", "zoo", "passes", "export", "runtimes", "training", "agent"},
    "cli": {"core", "profile", "data", "zoo", "passes", "export", "runtimes", "training", "agent", "pipeline"},
}
# Single edges that break the table, each with the reason it still stands. Keep this short.
EXCEPTIONS: dict[tuple[str, str], str] = {}  # (module, imported) -> why, for an edge being moved


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else ROOT  # __main__ is the root's


def _resolve(module: str, name: str | None) -> str:
    """`from deploykit import zoo` imports the subpackage deploykit.zoo, not the root."""
    return f"{module}.{name}" if name and f"{module}.{name}" in MODULES else module


def imports_of(source: str, module: str, *, is_package: bool = False) -> list[tuple[str, int]]:
    """(imported deploykit module, line) for every import in `source`, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            found += [(_resolve(base, alias.name), node.lineno) for alias in node.names]
        elif _is_import_module_call(node):
            found.append((node.args[0].value, node.lineno))
    return [(name, line) for name, line in found if name == ROOT or name.startswith(ROOT + ".")]


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
    return ".".join(package + ([node.module] if node.module else []))


def _is_import_module_call(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
            and len(node.args) == 1 and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str))


def forbidden_edges(module: str, source: str, *, is_package: bool = False) -> list[str]:
    """What `module` imports that its layer may not, one readable line each."""
    layer, wrong = _layer(module), []
    for imported, line in imports_of(source, module, is_package=is_package):
        target = _layer(imported)
        if layer == ROOT or (module, imported) in EXCEPTIONS:
            continue
        if imported == ROOT and not _names_only(source, line):
            wrong.append(f"{module}:{line} imports the bare package `deploykit` (any layer through its attributes)")
        elif target not in (layer, ROOT) and target not in ALLOWED[layer]:
            allowed = f"only {', '.join(sorted(ALLOWED[layer]))}" if ALLOWED[layer] else "no other layer"
            wrong.append(f"{module}:{line} imports {imported}: layer {layer!r} may import {allowed}, not {target!r}")
    return list(dict.fromkeys(wrong))  # `from m import a, b` is one edge


def _names_only(source: str, line: int) -> bool:
    """`from deploykit import __version__` names a root attribute; `import deploykit` opens every layer."""
    return any(isinstance(n, ast.ImportFrom) and n.lineno == line for n in ast.walk(ast.parse(source)))


def test_every_module_imports_only_from_its_own_layer_or_an_allowed_one():
    wrong = [edge for module, path in MODULES.items()
             for edge in forbidden_edges(module, path.read_text(), is_package=path.name == "__init__.py")]
    assert not wrong, "forbidden imports:\n" + "\n".join(wrong)


def test_every_subpackage_has_a_layer_in_the_table():
    layers = {_layer(m) for m in MODULES} - {ROOT}
    assert layers == set(ALLOWED), f"add {layers - set(ALLOWED)} to ALLOWED; drop {set(ALLOWED) - layers}"


def test_the_table_has_no_cycle():
    def reaches(start: str, goal: str, seen: frozenset = frozenset()) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in ALLOWED[start])

    assert not [layer for layer in ALLOWED if reaches(layer, layer)]


def test_every_exception_is_still_an_import():
    for (module, imported), why in EXCEPTIONS.items():
        assert imported in [name for name, _ in imports_of(MODULES[module].read_text(), module)], \
            f"{module} no longer imports {imported}: drop the exception ({why})"


@pytest.mark.parametrize(("source", "module", "expected"), [
    ("def f():\n    from deploykit.cli import app\n", "deploykit.core.x", ["deploykit.cli.app"]),
    ("import deploykit.pipeline.export as e\n", "deploykit.zoo.x", ["deploykit.pipeline.export"]),
    ("from deploykit import zoo, __version__\n", "deploykit.passes.x", ["deploykit.zoo", ROOT]),
    ("from ..zoo import create\n", "deploykit.profile.x", ["deploykit.zoo"]),
    ("import importlib\nimportlib.import_module('deploykit.passes.prune')\n", "deploykit.zoo", ["deploykit.passes.prune"]),
])
def test_the_reader_sees_every_spelling_of_an_import(source, module, expected):
    assert [name for name, _ in imports_of(source, module)] == expected


def test_a_lazy_upward_import_is_caught():
    lazy = "def helper():\n    from deploykit.cli import app\n    return app\n"
    assert forbidden_edges("deploykit.core.errors", lazy) == [
        "deploykit.core.errors:2 imports deploykit.cli.app: layer 'core' may import no other layer, not 'cli'"]


def test_a_bare_package_import_is_caught_and_a_version_import_is_not():
    assert forbidden_edges("deploykit.zoo.catalog", "import deploykit\n")
    assert not forbidden_edges("deploykit.zoo.catalog", "from deploykit import __version__\n")
