"""Command options as data. Each option names its `--help` panel and where its value goes (`to`: a field of
the command's request dataclass, of a nested config, or the command's own display), so a command with thirty
options is a table and a short function, not a thirty-parameter signature. typer reads the signature that
`takes` builds from the table, exactly as if it had been written out."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import typer

CACHE_HELP = "cache folder (default: $DEPLOYKIT_PIPELINE_CACHE, else .deploykit-cache/ here)"  # run, sweep


@dataclass(frozen=True)
class Opt:
    name: str  # the parameter's name: the request field it fills (and, with `_` as `-`, the flag)
    annotation: Any
    info: Any  # typer.Option(...) or typer.Argument(...)
    to: str  # which part of the request it fills: "request", "options", "config", "show", ...


def option(name: str, annotation: Any, default: Any, help: str, *, panel: str, to: str = "request",
           flags: tuple[str, ...] = (), **limits: Any) -> Opt:
    """An option shown in `panel` of `--help`; `flags` replace the default `--name` spelling. A ranged number
    shows as N or X beside its range (typer's `<int range>` would widen every row of its panel)."""
    metavar = {int: "N", float: "X"}.get(_bare(annotation)) if limits else None
    return Opt(name, annotation, typer.Option(default, *flags, help=help, rich_help_panel=panel, metavar=metavar,
                                              **limits), to)


def _bare(annotation: Any) -> Any:
    """`Optional[int]` -> int."""
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    return args[0] if len(args) == 1 else annotation


def argument(name: str, annotation: Any, default: Any, help: str, **extra: Any) -> Opt:
    return Opt(name, annotation, typer.Argument(default, help=help, **extra), "request")


def takes(options: Sequence[Opt]) -> Callable[[Callable], Callable]:
    """Give `fn(**values)` the parameters of `options`, in order, for typer to read."""

    def wrap(fn: Callable) -> Callable:
        fn.__signature__ = inspect.Signature([
            inspect.Parameter(o.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=o.info, annotation=o.annotation)
            for o in options])
        fn.__annotations__ = {o.name: o.annotation for o in options} | {"return": None}
        return fn

    return wrap


def values_for(options: Sequence[Opt], values: dict, to: str) -> dict:
    """The values of the options that go `to` one part of the request, by name."""
    return {o.name: values[o.name] for o in options if o.to == to}


def given(values: dict) -> dict:
    """Only the options the user set (None and off flags dropped): a target refuses those not its own."""
    return {key: value for key, value in values.items() if value is not None and value is not False}
