"""Registered passes: pure functions `model -> new model`, each with a frozen config type, each registered
under the name of the public function a user calls (`fold_bn`, `reparameterize`, `prune_channels`)."""

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
    name: str  # the public function's name
    fn: Callable  # how the runner calls it: fn(model, config) -> nn.Module | PassResult
    config_type: type
    takes_probe: bool = False  # fn also takes `example_input=`: the runner's probe batch
    public: Callable | None = None  # the function users call (fn itself unless the runner needs a wrapper)

    def config_dict(self, config) -> dict:
        return asdict(config)


# The modules that register passes, imported by the registry on its first lookup.
PASS_MODULES = ("fold_bn", "reparameterize", "prune")
PASSES: Registry[PassEntry] = Registry("pass", members=tuple(f"deploykit.passes.{m}" for m in PASS_MODULES))


def register_pass(config_type: type, *, takes_probe: bool = False, public: Callable | None = None) -> Callable:
    """Register `fn(model, config) -> nn.Module | PassResult` under the name of `public` (the function users
    call; `fn` itself by default); with `takes_probe`, the runner also passes `example_input=` its probe batch
    (for passes that check their own steps on real activations)."""

    def wrap(fn: Callable) -> Callable:
        name = (public or fn).__name__
        PASSES.add(name, PassEntry(name, fn, config_type, takes_probe, public or fn))
        return fn

    return wrap
