"""Registered passes: pure functions `model -> new model`, each with a frozen config type."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from deploykit.core.registry import Registry


@dataclass(frozen=True)
class PassEntry:
    name: str
    fn: Callable
    config_type: type

    def config_dict(self, config) -> dict:
        return asdict(config)


PASSES: Registry[PassEntry] = Registry("pass")


def register_pass(name: str, config_type: type) -> Callable:
    def wrap(fn: Callable) -> Callable:
        PASSES.add(name, PassEntry(name, fn, config_type))
        return fn

    return wrap
