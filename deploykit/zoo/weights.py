"""Which weights a zoo model gets, decided in one place for export and eval.

A file given by the user, in any layout its family lists (`ModelEntry.layouts`), saved in training form or
already fused (deploy form); else the zoo's released weights when it has them (`ModelEntry.default_weights`);
else a random init. Use it through `deploykit.zoo.load_weights`.

The deploy form is the reparameterize pass's structure, and the passes sit above the zoo: a caller that
accepts deploy-form checkpoints hands in the function that builds that form (`deploy_form`;
`pipeline.weights.load_weights` does), and this module tries it after the training form.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple, NoReturn

from torch import nn

from deploykit.core.errors import DeployKitError
from deploykit.core.fsutil import sha256_file
from deploykit.zoo.checkpoint import load_into, magnitude_warnings, read_state_dict, with_bn_counters
from deploykit.zoo.layouts import OWN, Layout

if TYPE_CHECKING:
    from deploykit.zoo import ModelEntry

RANDOM_INIT = "random-init"
DeployForm = Callable[[nn.Module], "nn.Module | None"]  # the model's deploy form, or None when it has none


class LoadedWeights(NamedTuple):
    """A zoo model with its weights and what they were."""

    model: nn.Module
    sha256: str = RANDOM_INIT  # of the weights file
    path: Path | None = None  # None: a random init
    form: str = "training"  # "deploy": the checkpoint was fused already, and so is `model`
    layout: str | None = None  # the name of the layout whose keys matched
    warnings: tuple[str, ...] = ()  # about the values (absurd magnitudes), for the user to see


def load_weights(entry: ModelEntry, model: nn.Module, path: Path | None = None, *, pretrained: bool = True,
                 deploy_form: DeployForm | None = None) -> LoadedWeights:
    """`model` (built from `entry`, eval mode) with the weights at `path`; without a path, the entry's
    released weights if `pretrained` and it has some, else the model as it is (a random init). With
    `deploy_form`, a checkpoint saved in that form loads too (into a new, deploy-form model)."""
    if path is None:
        if not pretrained or entry.default_weights is None:
            return LoadedWeights(model)
        path = _released_weights(entry)
    path = Path(path)
    state = read_state_dict(path)
    layouts = entry.layouts or (OWN,)
    found = _match(model, state, layouts, deploy_form)
    if found is None:
        _raise_mismatch(model, state, layouts, path, deploy_form)
    target, form, layout, adapted = found
    load_into(target, adapted, source=f"weights {path} ({layout.name} layout, {form} form)")
    warnings = tuple(magnitude_warnings(adapted, f"weights {path}"))
    return LoadedWeights(target.eval(), sha256_file(path), path, form, layout.name, warnings)


def _released_weights(entry: ModelEntry) -> Path:
    path = Path(entry.default_weights())
    if not path.is_file():
        raise DeployKitError(f"the released weights of {entry.name} are not at {path}",
                             fix="pass --weights FILE (export: or --random-init); DEPLOYKIT_DATA moves the "
                                 "data folder")
    return path


def _match(model: nn.Module, state: dict, layouts: tuple[Layout, ...], deploy_form: DeployForm | None):
    """(model, form, layout, renamed state) for the first form and layout under which the checkpoint's keys
    are exactly the model's; shapes are left to `load_into`, whose error names them."""
    for form, target in _forms(model, deploy_form):
        own = target.state_dict()
        for layout in layouts:
            adapted = with_bn_counters(layout.adapt(state), own)
            if set(adapted) == set(own):
                return target, form, layout, adapted
    return None


def _forms(model: nn.Module, deploy_form: DeployForm | None) -> Iterator[tuple[str, nn.Module]]:
    """The training form, then (built only when asked for) the deploy form, when the caller gives one."""
    yield "training", model
    deployed = deploy_form(model.eval()) if deploy_form is not None else None
    if deployed is not None:
        yield "deploy", deployed


def _raise_mismatch(model: nn.Module, state: dict, layouts: tuple[Layout, ...], path: Path,
                    deploy_form: DeployForm | None) -> NoReturn:
    """The keys that do not fit, under the layout that came closest, and everything that was tried."""
    own = set(model.state_dict())
    closest = min(layouts, key=lambda layout: len(set(layout.adapt(state)) ^ own))
    forms = "training and deploy form" if len(list(_forms(model, deploy_form))) > 1 else "training form"
    tried = f"layouts tried: {', '.join(layout.name for layout in layouts)}, each in {forms}"
    # No layout gives the training form's keys, so this raises, listing the missing and unexpected keys.
    load_into(model, closest.adapt(state), source=f"weights {path} ({tried}; closest: {closest.name})")
    raise AssertionError("unreachable: load_into accepted keys that _match rejected")
