"""The model zoo: training-time (multi-branch) models behind one registry.

`create(name)` returns the training-time module; `reparameterize` turns it into deploy form;
`load_weights(name, model, path)` gives it weights (for export and eval alike).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from deploykit.core.preprocess import Preprocess
from deploykit.core.registry import Registry
from deploykit.zoo.layouts import Layout

# One module per family, imported by the registry on its first lookup (so `deploykit --help` stays instant).
FAMILIES = ("mobileone", "repvgg", "mobilenet", "vovnet", "resnet_cifar", "efficientnet_lite")


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder, default input, preprocessing and published figures, the checkpoint
    layouts it loads and where its released weights are."""

    name: str
    family: str
    builder: Callable
    num_classes: int = 1000
    preprocess: Preprocess = field(default_factory=Preprocess)
    paper: dict = field(default_factory=dict)  # e.g. {"params_m": 4.8, "macs_m": 825, "source": "..."}
    layouts: tuple[Layout, ...] = ()  # tried in order, in training then deploy form; () = our own key names
    default_weights: Callable[[], Path] | None = None  # the released weights file, when the zoo knows one

    @property
    def input_size(self) -> int:
        return self.preprocess.input_size


MODELS: Registry[ModelEntry] = Registry("model", members=tuple(f"deploykit.zoo.{family}" for family in FAMILIES))


def register_model(name: str, *, num_classes: int = 1000, preprocess: Preprocess | None = None,
                   paper: dict | None = None, layouts: tuple[Layout, ...] = (),
                   default_weights: Callable[[], Path] | None = None) -> Callable:
    """Decorator: register `builder(num_classes=..., **kw) -> nn.Module` under `name`."""

    def wrap(builder: Callable) -> Callable:
        family = builder.__module__.rsplit(".", 1)[-1]
        entry = ModelEntry(name, family, builder, num_classes, preprocess or Preprocess(), paper or {},
                           layouts, default_weights)
        MODELS.add(name, entry)
        return builder

    return wrap


def get(name: str) -> ModelEntry:
    return MODELS.get(name)


def names() -> list[str]:
    return MODELS.names()


def create(name: str, num_classes: int | None = None, **kwargs):
    """The training-time model `name` (random init); `load_weights` gives it weights."""
    entry = get(name)
    model = entry.builder(num_classes=entry.num_classes if num_classes is None else num_classes, **kwargs)
    return model.eval()


def load_weights(name: str, model, path: Path | None = None, *, pretrained: bool = True, deploy_form=None):
    """`model` (from `create(name)`) with the weights at `path`, in any layout its entry lists, in training
    form (or in deploy form, given the function that builds it: `pipeline.weights.load_weights` passes the
    reparameterize pass's); without a path, the released weights when the zoo has them and `pretrained`,
    else a random init.

    Returns `weights.LoadedWeights(model, sha256 or "random-init", path, form, layout)`.
    """
    from deploykit.zoo.weights import load_weights as load

    return load(get(name), model, path, pretrained=pretrained, deploy_form=deploy_form)
