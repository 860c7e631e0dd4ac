"""Small inconsistencies a newcomer meets in --help (issue 16, item 7)."""

from __future__ import annotations

import os
import subprocess
import sys

from deploykit.cli.app import _register_commands, cli_command, plural


def _commands() -> dict:
    _register_commands()
    root = cli_command()
    found = {}
    for name, sub in root.commands.items():
        found.update({f"{name} {n}": c for n, c in getattr(sub, "commands", {}).items()} or {name: sub})
    return found


def test_threads_default_the_same_in_every_command():
    defaults = {name: p.default for name, c in _commands().items() for p in c.params if p.name == "threads"}
    assert {"export", "eval", "finetune"} <= set(defaults) and set(defaults.values()) == {2}, defaults


def test_help_shows_no_type_beside_flags_and_says_where_calib_names_resolve():
    done = subprocess.run([sys.executable, "-m", "deploykit", "export", "--help"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "250"}, check=True)
    assert "<bool>" not in done.stdout and "<int>" in done.stdout  # values keep their type
    calib = next(line for line in done.stdout.splitlines() if "--calib " in line)
    assert "shared data folder" in calib


def test_plural():
    assert (plural(1, "epoch"), plural(3, "epoch")) == ("1 epoch", "3 epochs")
