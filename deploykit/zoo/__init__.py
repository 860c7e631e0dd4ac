"""The model zoo: training-time (multi-branch) models behind one registry.

`create(name)` returns the training-time module; `reparameterize` turns it into deploy form.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from deploykit.core.preprocess import Preprocess
from deploykit.core.registry import Registry

# Families are imported on first use so `deploykit --help` stays instant.
_FAMILIES = ("mobileone", "repvgg", "mobilenet", "vovnet", "resnet_cifar", "efficientnet_lite")


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder, default input, preprocessing and published figures."""

    name: str
    family: str
    builder: Callable
    num_classes: int = 1000
    preprocess: Preprocess = field(default_factory=Preprocess)
    paper: dict = field(default_factory=dict)  # e.g. {"params_m": 4.8, "macs_m": 825, "source": "..."}

    @property
    def input_size(self) -> int:
        return self.preprocess.input_size


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, *, num_classes: int = 1000, preprocess: Preprocess | None = None,
                   paper: dict | None = None) -> Callable:
    """Decorator: register `builder(num_classes=..., **kw) -> nn.Module` under `name`."""

    def wrap(builder: Callable) -> Callable:
        family = builder.__module__.rsplit(".", 1)[-1]
        MODELS.add(name, ModelEntry(name, family, builder, num_classes, preprocess or Preprocess(), paper or {}))
        return builder

    return wrap


def _load_families() -> None:
    for family in _FAMILIES:
        importlib.import_module(f"deploykit.zoo.{family}")


def get(name: str) -> ModelEntry:
    _load_families()
    return MODELS.get(name)


def names() -> list[str]:
    _load_families()
    return MODELS.names()


def create(name: str, num_classes: int | None = None, **kwargs):
    """The training-time model `name` (random init); see `deploykit.zoo.checkpoint` for weights."""
    entry = get(name)
    model = entry.builder(num_classes=entry.num_classes if num_classes is None else num_classes, **kwargs)
    return model.eval()
