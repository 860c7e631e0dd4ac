"""Registered passes: pure functions `model -> new model`, each with a frozen config type."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable

from deploykit.core.registry import Registry

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class PassResult:
    """What a pass may return instead of a bare module: the module and a report for the manifest
    (`PassRecord.report`); plain JSON-able data."""

    model: "nn.Module"
    report: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PassEntry:
    name: str
    fn: Callable
    config_type: type
    takes_probe: bool = False  # fn also takes `example_input=`: the runner's probe batch

    def config_dict(self, config) -> dict:
        return asdict(config)


PASSES: Registry[PassEntry] = Registry("pass")


def register_pass(name: str, config_type: type, *, takes_probe: bool = False) -> Callable:
    """Register `fn(model, config) -> nn.Module | PassResult`; with `takes_probe`, the runner also passes
    `example_input=` its probe batch (for passes that check their own steps on real activations)."""

    def wrap(fn: Callable) -> Callable:
        PASSES.add(name, PassEntry(name, fn, config_type, takes_probe))
        return fn

    return wrap
