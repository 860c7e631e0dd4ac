"""Options that arrive as values (the command line, a recipe stage's `options:`) checked by the types that
declare them, as config files are by `core/config.py`: a `Literal` annotation is the list of choices, so no
command keeps a second list of them to check by hand."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from deploykit.core.errors import DeployKitError


def choices_of(annotation: Any) -> tuple:
    """The values a `Literal[...]` (or `Optional[Literal[...]]`) allows; () for any other annotation."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return choices_of(args[0]) if len(args) == 1 else ()


def choice(value: Any, allowed: Any, *, option: str, what: str) -> Any:
    """`value` when it is one of `allowed`'s choices (None passes: "not given"); else the error naming them."""
    choices = choices_of(allowed)
    if value is not None and value not in choices:
        raise DeployKitError(f"{what}: invalid --{option.replace('_', '-')} {value}",
                             fix=f"one of {', '.join(map(str, choices))}")
    return value


def check_choices(instance: Any, *, what: str) -> None:
    """Every `Literal` field of the dataclass `instance` holds one of its choices (call from __post_init__)."""
    hints = typing.get_type_hints(type(instance))
    for field in dataclasses.fields(instance):
        if choices_of(hints[field.name]):
            choice(getattr(instance, field.name), hints[field.name], option=field.name, what=what)
