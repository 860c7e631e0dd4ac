"""Typed, frozen configuration from YAML: recipes/ and devices/ are data validated against dataclasses.

Unknown keys, wrong types and missing keys are errors that name the key, the file and the line.
A type whose shape depends on its own values (a pass whose options depend on its name) converts itself
with a `__from_yaml__(node: ConfigNode)` classmethod; `context` carries what it needs to look things up.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, Union

import yaml

from deploykit.core.errors import DeployKitError

T = TypeVar("T")


class ConfigError(DeployKitError):
    """A config file that does not match its schema."""


def load_config(path: Path, schema: type[T], *, context: Mapping[str, Any] | None = None) -> T:
    """Parse `path` (YAML) into the frozen dataclass `schema`; `context` goes to `__from_yaml__` hooks."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    node = compose_checked(path)
    if node is None:
        raise ConfigError(f"{path}: the file is empty")
    return _convert(node, schema, _Where(str(path), schema.__name__, dict(context or {})))


# A config is data: plain YAML values only (no `!!python/...` tags, no application tags), and no more than
# MAX_NODES values once aliases are expanded. A 510-byte "billion laughs" alias bomb expands to billions of
# values: it took more than 3 GB before anything looked at it. Recipes hold a few hundred values at most.
MAX_NODES = 10_000
MAX_DEPTH = 100
_PLAIN_TAG = "tag:yaml.org,2002:"


def compose_checked(path: Path) -> yaml.Node | None:
    """The YAML node graph of `path` (composed, never constructed), refused with file:line when it holds a
    tag that is not plain YAML, a recursive alias, or more than MAX_NODES values with aliases expanded."""
    try:
        node = yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}", fix="fix the YAML syntax at the line shown") from exc
    except RecursionError:
        raise ConfigError(f"{path}: nested more than Python can parse", fix="flatten the file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", fix="check the path and that it is a UTF-8 text file") from exc
    if node is not None:
        _check_graph(node, str(path))
    return node


def _check_graph(root: yaml.Node, file: str) -> None:
    """Depth-first over the node graph (aliases are shared node objects), counting expanded values."""
    expanded: dict[int, int] = {}  # id(node) -> values below it, aliases expanded
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            on_path.discard(id(node))
            expanded[id(node)] = 1 + sum(expanded[id(c)] for c in _children(node))
            if expanded[id(node)] > MAX_NODES:
                raise _graph_error(file, node, f"expands to more than {MAX_NODES} values (an alias bomb?)")
            continue
        if id(node) in expanded:
            continue
        if id(node) in on_path:
            raise _graph_error(file, node, "holds an alias to itself (a recursive alias)")
        _check_tag(node, file)
        if len(on_path) >= MAX_DEPTH:
            raise _graph_error(file, node, f"is nested more than {MAX_DEPTH} levels deep")
        on_path.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in expanded)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_tag(node: yaml.Node, file: str) -> None:
    tag = node.tag or ""
    if not tag.startswith(_PLAIN_TAG) or tag[len(_PLAIN_TAG):].startswith("python/"):
        shown = "!!" + tag[len(_PLAIN_TAG):] if tag.startswith(_PLAIN_TAG) else tag
        raise ConfigError(f"{file}:{node.start_mark.line + 1}: the tag {shown} is not allowed: a config holds "
                          "plain values (a python/ tag would build objects or run code)",
                          fix="remove the tag and write the plain value")


def _graph_error(file: str, node: yaml.Node, what: str) -> ConfigError:
    return ConfigError(f"{file}:{node.start_mark.line + 1}: the value here {what}",
                       fix="write the values out, or use fewer aliases (*name)")


@dataclasses.dataclass(frozen=True)
class _Where:
    file: str
    key: str
    context: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def at(self, node: yaml.Node) -> str:
        return f"{self.file}:{node.start_mark.line + 1}"

    def child(self, key: object) -> "_Where":
        return _Where(self.file, f"{self.key}.{key}", self.context)


@dataclasses.dataclass(frozen=True)
class ConfigNode:
    """A YAML node under conversion as a `__from_yaml__` hook sees it: convert parts, fail with key + line."""

    node: yaml.Node
    where: _Where
    key: yaml.Node | None = None  # the mapping key that introduced this value, for errors about the key

    @property
    def context(self) -> Mapping[str, Any]:
        return self.where.context

    @property
    def is_mapping(self) -> bool:
        return isinstance(self.node, yaml.MappingNode)

    def is_null(self) -> bool:
        return isinstance(self.node, yaml.ScalarNode) and self.node.tag.endswith(":null")

    def scalar(self) -> Any:
        """The plain value of a scalar node (str, int, float, bool or None)."""
        if not isinstance(self.node, yaml.ScalarNode):
            raise self.fail("expected a single value")
        return _scalar_value(self.node)

    def items(self) -> list[tuple[str, "ConfigNode"]]:
        """(key, value node) of a mapping; a value's errors name it under its key."""
        if not self.is_mapping:
            raise self.fail("expected a mapping")
        _check_duplicates(self.node, self.where)
        return [(k.value, ConfigNode(v, self.where.child(k.value), k)) for k, v in self.node.value]

    def child(self, key: str | int) -> "ConfigNode":
        """The value under `key` (a mapping key or a list index); this node itself when it is absent."""
        if isinstance(self.node, yaml.SequenceNode) and isinstance(key, int) and key < len(self.node.value):
            return ConfigNode(self.node.value[key], self.where.child(key))
        if self.is_mapping:
            for k, v in self.node.value:
                if k.value == key:
                    return ConfigNode(v, self.where.child(key), k)
        return self

    def convert(self, annotation: Any) -> Any:
        return _convert(self.node, annotation, self.where)

    def convert_fields(self, cls: type) -> Any:
        """`cls` from this mapping the ordinary way (for a hook that checks more afterwards)."""
        return _to_dataclass(self.node, cls, self.where)

    def fail(self, message: str, fix: str | None = None) -> ConfigError:
        return _fail(self.where, self.node, message, fix)

    def key_fail(self, message: str, fix: str | None = None) -> ConfigError:
        """An error at the line of the key (a nested mapping's value starts a line later)."""
        return _fail(self.where, self.key or self.node, message, fix)


def _fail(where: _Where, node: yaml.Node, message: str, fix: str | None = None) -> ConfigError:
    return ConfigError(f"{where.at(node)}: {where.key}: {message}", fix=fix)


def _convert(node: yaml.Node, annotation: Any, where: _Where) -> Any:
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and hasattr(annotation, "__from_yaml__"):
        return annotation.__from_yaml__(ConfigNode(node, where))
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
    _check_duplicates(node, where)
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
    except DeployKitError as exc:  # config types of other layers (pass configs) raise the user-facing kind
        raise _fail(where, node, exc.message, exc.fix) from exc


def _check_duplicates(node: yaml.MappingNode, where: _Where) -> None:
    """YAML keeps the last of two equal keys; a config treats the second as the mistake it is."""
    seen = set()
    for key_node, _ in node.value:
        if key_node.value in seen:
            raise _fail(where, key_node, f"duplicate key {key_node.value!r}")
        seen.add(key_node.value)


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
    _check_duplicates(node, where)
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
