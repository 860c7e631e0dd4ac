"""Start-up stays light: the CLI, every command module, every command's --help and a bare `import deploykit`
load no torch and no backend; they load when a command runs. Checked in a fresh interpreter (this process
has long imported torch)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import deploykit

PACKAGE = Path(deploykit.__file__).parent
HEAVY = ("torch", "onnx", "onnxruntime", "coremltools", "openvino", "tensorrt", "litert_torch", "ai_edge_litert",
         "executorch", "timm", "ray")
COMMAND_MODULES = sorted(f"deploykit.cli.{p.stem}" for p in (PACKAGE / "cli").glob("*.py") if p.stem != "__init__")


def heavy_modules_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter has loaded once it has run `code`."""
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(set(sys.modules) & set({HEAVY!r}))))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_cli_and_every_command_module_import_no_heavy_module():
    code = "\n".join(f"import {module}" for module in ["deploykit.cli", *COMMAND_MODULES])
    assert heavy_modules_after(code) == []


def test_every_commands_help_renders_without_a_heavy_module():
    code = """
import importlib
from click.testing import CliRunner
app_module = importlib.import_module("deploykit.cli.app")  # the package's `app` attribute is the Typer object
app_module._register_commands()
command = app_module.cli_command()
names = [[name] for name in command.commands] + [[group, sub] for group, cmd in command.commands.items()
                                                 for sub in getattr(cmd, "commands", {})]
for name in [[]] + names:
    result = CliRunner().invoke(command, [*name, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output, (name, result.output)
"""
    assert heavy_modules_after(code) == []


def test_a_bare_import_names_the_zoo_without_loading_torch():
    code = "import deploykit\nassert callable(deploykit.zoo.create) and 'passes' in dir(deploykit)"
    assert heavy_modules_after(code) == []  # torch waits for a model to be built


def test_a_bare_import_reaches_every_layer_as_an_attribute():
    """The docs' `deploykit.zoo.create(...)` after `import deploykit` (it was an AttributeError)."""
    layers = [name for name in dir(deploykit) if (PACKAGE / name).is_dir()]
    code = "import deploykit\n" + "\n".join(f"deploykit.{name}" for name in layers) + (
        "\nassert deploykit.profile.count_cost(deploykit.zoo.create('resnet20_cifar'), 32).macs > 0")
    assert "torch" in heavy_modules_after(code)
    assert sorted(layers) == sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())


def test_core_imports_no_heavy_module():
    modules = [f"deploykit.core.{p.stem}" for p in (PACKAGE / "core").glob("*.py") if p.stem != "__init__"]
    assert heavy_modules_after("\n".join(f"import {m}" for m in modules)) == []


def test_the_probe_sees_a_heavy_import():
    """The control: building a model does load torch, so an empty list above means something."""
    assert "torch" in heavy_modules_after("import deploykit\ndeploykit.zoo.create('resnet20_cifar')")
