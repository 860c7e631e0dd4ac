"""Config files: typed, frozen, and every error names the key, the file and the line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from deploykit.core.config import ConfigError, load_config


@dataclass(frozen=True)
class Inner:
    runtime: Literal["onnxruntime", "openvino"]
    threads: int = 2


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner
    batches: list[int] = field(default_factory=lambda: [1])
    tolerance: float | None = None
    extra: dict[str, float] = field(default_factory=dict)


def _write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_valid_config_parses_into_frozen_types(tmp_path):
    cfg = load_config(_write(tmp_path, "name: a\ninner: {runtime: openvino}\nbatches: [1, 8]\ntolerance: 1\n"
                                       "extra: {x: 2}\n"), Outer)
    assert cfg == Outer("a", Inner("openvino", 2), [1, 8], 1.0, {"x": 2.0})
    with pytest.raises(Exception):
        cfg.name = "b"


@pytest.mark.parametrize("text,expected", [
    ("name: a\ninner:\n  runtime: openvino\n  thread: 2\n", "c.yaml:4: Outer.inner: unknown key 'thread'"),
    ("name: a\ninner:\n  runtime: openvino\n  threads: two\n", "c.yaml:4: Outer.inner.threads: expected int"),
    ("name: a\ninner:\n  runtime: tflite\n", "c.yaml:3: Outer.inner.runtime: 'tflite' is not one of"),
    ("inner:\n  runtime: openvino\n", "c.yaml:1: Outer: missing required key 'name'"),
    ("name: a\ninner: {runtime: openvino}\nbatches: [1, x]\n", "c.yaml:3: Outer.batches.1: expected int"),
    ("name: [a\n", "not valid YAML"),
])
def test_errors_name_key_and_line(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), Outer)
    assert expected in info.value.message


def test_bool_is_not_an_int(tmp_path):
    with pytest.raises(ConfigError, match="expected int"):
        load_config(_write(tmp_path, "name: a\ninner: {runtime: openvino, threads: true}\n"), Outer)


# --- YAML that is not plain data (issue 15, items 11 and 13) ------------------------------------------

LAUGHS = "\n".join(["name: a", "inner: {runtime: openvino}", "extra:"] + [
    f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else "lol"] * 9) + "]" for i in range(9)])


@pytest.mark.parametrize("text,expected", [
    (LAUGHS, "c.yaml:8: the value here expands to more than 10000 values"),
    ("name: &n [*n]\ninner: {runtime: openvino}\n", "c.yaml:1: the value here holds an alias to itself"),
    ("name: !!python/object/apply:os.system [touch PWNED]\ninner: {runtime: openvino}\n",
     "c.yaml:1: the tag !!python/object/apply:os.system is not allowed"),
    ("name: !!python/name:builtins.eval ''\ninner: {runtime: openvino}\n", "tag !!python/name:builtins.eval"),
    ("name: !custom a\ninner: {runtime: openvino}\n", "c.yaml:1: the tag !custom is not allowed"),
    ("name: a\ninner: {runtime: openvino}\nextra: " + "[" * 150 + "]" * 150 + "\n", "nested more than"),
])
def test_yaml_that_is_not_plain_data_is_refused_at_its_line(tmp_path, text, expected):
    """A 500-byte alias bomb took more than 3 GB and ended in "internal error: MemoryError"; python tags
    and recursive aliases ended as internal errors too."""
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), Outer)
    assert expected in info.value.message and info.value.fix
    assert not (tmp_path / "PWNED").exists()


def test_a_few_aliases_are_still_fine(tmp_path):
    cfg = load_config(_write(tmp_path, "name: a\ninner: &i {runtime: openvino}\nextra: {x: &x 2, y: *x}\n"), Outer)
    assert cfg.extra == {"x": 2.0, "y": 2.0}
