"""Typed, frozen configuration from YAML: recipes/ and devices/ are data validated against dataclasses.

Unknown keys, wrong types and missing keys are errors that name the key, the file and the line.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from deploykit.core.errors import DeployKitError

T = TypeVar("T")


class ConfigError(DeployKitError):
    """A config file that does not match its schema."""


def load_config(path: Path, schema: type[T]) -> T:
    """Parse `path` (YAML) into the frozen dataclass `schema`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        node = yaml.compose(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}", fix="fix the YAML syntax at the line shown") from exc
    if node is None:
        raise ConfigError(f"{path}: the file is empty")
    return _convert(node, schema, _Where(str(path), schema.__name__))


@dataclasses.dataclass(frozen=True)
class _Where:
    file: str
    key: str

    def at(self, node: yaml.Node) -> str:
        return f"{self.file}:{node.start_mark.line + 1}"

    def child(self, key: object) -> "_Where":
        return _Where(self.file, f"{self.key}.{key}")


def _fail(where: _Where, node: yaml.Node, message: str, fix: str | None = None) -> ConfigError:
    return ConfigError(f"{where.at(node)}: {where.key}: {message}", fix=fix)


def _convert(node: yaml.Node, annotation: Any, where: _Where) -> Any:
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        return _to_dataclass(node, annotation, where)
    if origin in (Union, types.UnionType):
        return _to_union(node, typing.get_args(annotation), where)
    if origin is Literal:
        return _to_literal(node, typing.get_args(annotation), where)
    if origin in (list, tuple):
        return _to_sequence(node, annotation, where)
    if origin is dict:
        return _to_mapping(node, typing.get_args(annotation)[1], where)
    return _to_scalar(node, annotation, where)


def _to_dataclass(node: yaml.Node, cls: type, where: _Where) -> Any:
    if not isinstance(node, yaml.MappingNode):
        raise _fail(where, node, f"expected a mapping of {cls.__name__} fields")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key_node, value_node in node.value:
        key = key_node.value
        if key not in fields:
            raise _fail(where, key_node, f"unknown key {key!r}", fix=f"known keys: {', '.join(fields)}")
        values[key] = _convert(value_node, hints[key], where.child(key))
    missing = [n for n, f in fields.items() if n not in values and _required(f)]
    if missing:
        raise _fail(where, node, f"missing required key {missing[0]!r}")
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:  # __post_init__ checks across fields
        raise _fail(where, node, str(exc)) from exc


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _to_union(node: yaml.Node, options: tuple, where: _Where) -> Any:
    if type(None) in options and isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
        return None
    errors = []
    for option in (o for o in options if o is not type(None)):
        try:
            return _convert(node, option, where)
        except ConfigError as exc:
            errors.append(exc.message)
    raise ConfigError(errors[0] if len(errors) == 1 else f"{where.at(node)}: {where.key}: matches none of "
                      f"{', '.join(_name(o) for o in options)}")


def _to_literal(node: yaml.Node, choices: tuple, where: _Where) -> Any:
    value = _scalar_value(node)
    if value not in choices:
        raise _fail(where, node, f"{value!r} is not one of {', '.join(map(str, choices))}")
    return value


def _to_sequence(node: yaml.Node, annotation: Any, where: _Where) -> Any:
    if not isinstance(node, yaml.SequenceNode):
        raise _fail(where, node, "expected a list")
    args = typing.get_args(annotation)
    item = args[0] if args else Any
    items = [_convert(n, item, where.child(i)) for i, n in enumerate(node.value)]
    return tuple(items) if typing.get_origin(annotation) is tuple else items


def _to_mapping(node: yaml.Node, value_type: Any, where: _Where) -> dict:
    if not isinstance(node, yaml.MappingNode):
        raise _fail(where, node, "expected a mapping")
    return {k.value: _convert(v, value_type, where.child(k.value)) for k, v in node.value}


_SCALARS = {str: ":str", int: ":int", float: ":float", bool: ":bool"}


def _to_scalar(node: yaml.Node, annotation: Any, where: _Where) -> Any:
    if annotation is Any:
        return yaml.safe_load(yaml.serialize(node))
    if not isinstance(node, yaml.ScalarNode):
        raise _fail(where, node, f"expected {_name(annotation)}")
    value = _scalar_value(node)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is Path and isinstance(value, str):
        return Path(value)
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise _fail(where, node, f"expected {_name(annotation)}, got {value!r}")
    return value


def _scalar_value(node: yaml.Node) -> Any:
    return yaml.safe_load(yaml.serialize(node))


def _name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))
