"""`--model-from package.module:factory`: a model deploykit has never seen, built by the user's own code.

Importing the user's module runs it; that is the point of the option (as `python -m` or uvicorn's
`module:app` would). Every way the spec can be wrong ends in one DeployKitError that names it.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Callable

from torch import nn

from deploykit.core.errors import DeployKitError
from deploykit.core.fsutil import sha256_file
from deploykit.zoo.checkpoint import load_into, magnitude_warnings, read_state_dict
from deploykit.zoo.weights import LoadedWeights

_FORM = "package.module:factory"


def factory_name(spec: str) -> str:
    """The artifact name a spec gives: the factory's own name (`pkg.models:make_net` -> make_net)."""
    return _split(spec)[1].rsplit(".", 1)[-1]


def load_factory(spec: str) -> Callable:
    module_name, attribute = _split(spec)
    module = _import(module_name, spec)
    factory = module
    for part in attribute.split("."):
        if not hasattr(factory, part):
            public = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            raise DeployKitError(f"--model-from {spec}: module {module_name!r} has no attribute "
                                 f"{attribute!r}", fix=f"callables it has: {', '.join(public[:12]) or 'none'}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise DeployKitError(f"--model-from {spec}: {attribute!r} is a {type(factory).__name__}, "
                             "not callable", fix="point at a function (or class) that returns an nn.Module")
    return factory


def build_user_model(spec: str, weights: Path | None = None) -> LoadedWeights:
    """The model `factory()` returns, in eval mode, with `weights` (a state dict of its own keys) loaded."""
    model = _call(load_factory(spec), spec)
    if weights is None:
        return LoadedWeights(model.eval())
    state = read_state_dict(Path(weights))
    load_into(model, state, source=f"weights {weights}")
    return LoadedWeights(model.eval(), sha256_file(Path(weights)), Path(weights), "training", "own",
                         tuple(magnitude_warnings(state, f"weights {weights}")))


def _split(spec: str) -> tuple[str, str]:
    module_name, sep, attribute = spec.partition(":")
    if not (sep and module_name and attribute) or ":" in attribute:
        raise DeployKitError(f"--model-from {spec!r} is not of the form {_FORM}",
                             fix="e.g. --model-from mypackage.models:build_net")
    return module_name, attribute


def _import(module_name: str, spec: str):
    # The console script's sys.path lacks the working directory that `python -m` would put first;
    # without it a user's `models.py` next to them would not import.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise DeployKitError(f"--model-from {spec}: cannot import {module_name!r} ({exc})",
                             fix="run from the directory holding it, or install its package") from exc
    except Exception as exc:  # noqa: BLE001 - an error in the user's module itself
        raise DeployKitError(f"--model-from {spec}: importing {module_name!r} raised "
                             f"{type(exc).__name__}: {exc}", fix="fix the module so that it imports") from exc


def _call(factory: Callable, spec: str) -> nn.Module:
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001 - the user's code: report it as such, in one line
        raise DeployKitError(f"--model-from {spec}: the factory raised {type(exc).__name__}: {exc}",
                             fix="the factory must build the model with no arguments") from exc
    if not isinstance(model, nn.Module):
        raise DeployKitError(f"--model-from {spec}: the factory returned a {type(model).__name__}, "
                             "not a torch.nn.Module", fix="return the model (an nn.Module instance)")
    return model
