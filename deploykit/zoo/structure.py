"""Thin (channel-pruned) models: describe their layer shapes, store that in the weights file, rebuild them.

A pruned model is the zoo model with some Conv2d / BatchNorm / Linear layers narrower. Its checkpoint
cannot load into `zoo.create(name)`, so the weights file says how to rebuild it: the safetensors header
holds a `deploykit_structure` metadata entry, JSON
`{"model": name, "layers": {module path: {"type": "Conv2d", "in": ..., "out": ..., "groups": ...}}}`
listing only the layers whose shape differs from the freshly built zoo model. `apply_structure` swaps those
layers for new ones of the recorded shape (every other hyperparameter kept), after which a strict
`load_state_dict` fills in the values. No code is stored or run: only integers.

It works for models whose forward reads channel counts from tensors, not from Python attributes fixed at
construction; the pruning pass refuses the attributes it knows would go stale (see passes/prune.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from deploykit.core.errors import DeployKitError

STRUCTURE_KEY = "deploykit_structure"
_BN = nn.modules.batchnorm._BatchNorm


def layer_spec(module: nn.Module) -> dict | None:
    """The shape-defining integers of a conv, BN or linear layer; None for any other module."""
    if isinstance(module, nn.Conv2d):
        return {"type": "Conv2d", "in": module.in_channels, "out": module.out_channels, "groups": module.groups}
    if isinstance(module, _BN):
        return {"type": type(module).__name__, "features": module.num_features}
    if isinstance(module, nn.Linear):
        return {"type": "Linear", "in": module.in_features, "out": module.out_features}
    return None


def describe_structure(model: nn.Module, reference: nn.Module, model_name: str) -> dict:
    """The layers of `model` whose shape differs from `reference` (the unpruned zoo model)."""
    ref = {name: layer_spec(m) for name, m in reference.named_modules()}
    layers = {}
    for name, module in model.named_modules():
        spec = layer_spec(module)
        if spec is not None and spec != ref.get(name):
            layers[name] = spec
    return {"model": model_name, "layers": layers}


def apply_structure(model: nn.Module, structure: dict) -> nn.Module:
    """Resize, in place, the layers `structure` lists (values are re-initialised; load weights next).

    The structure comes from a file, so it is checked against the model first: every entry names a layer
    of the model, of the same type, with positive integer widths no larger than that layer's (pruning only
    ever removes channels; a 1 MB header once asked for 14.4 GB of weights) and groups that divide them."""
    layers = structure.get("layers", {}) if isinstance(structure, dict) else None
    if not isinstance(layers, dict):
        raise _bad_structure("it is not {\"model\": ..., \"layers\": {name: spec}}")
    for name, spec in layers.items():
        try:
            old = model.get_submodule(name) if isinstance(name, str) and name else None
        except AttributeError:
            old = None
        if old is None:
            raise DeployKitError(f"the checkpoint's structure names a layer {name!r} this model does not have",
                                 fix=f"rebuild with the model it was pruned from ({structure.get('model')})")
        _check_spec(old, spec, name)
        _replace(model, name, _resized(old, spec, name))
    return model


def _check_spec(old: nn.Module, spec: object, name: str) -> None:
    original = layer_spec(old)
    if original is None or not isinstance(spec, dict) or set(spec) != set(original):
        raise _bad_structure(f"layer {name}: {_short(spec)} does not describe a {type(old).__name__} "
                             f"(expected the keys of {original})")
    if spec["type"] != original["type"]:
        return  # _resized names the type mismatch
    for key, limit in original.items():
        value = spec[key]
        if key != "type" and not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= limit):
            raise _bad_structure(f"layer {name}: {key} {_short(value)} is not a width between 1 and the "
                                 f"unpruned model's {limit}")
    if "groups" in spec and (spec["in"] % spec["groups"] or spec["out"] % spec["groups"]):
        raise _bad_structure(f"layer {name}: groups {spec['groups']} does not divide in {spec['in']} and out "
                             f"{spec['out']}")


def _bad_structure(what: str) -> DeployKitError:
    return DeployKitError(f"the checkpoint's {STRUCTURE_KEY} header is invalid: {what}",
                          fix="use the weights file `deploykit prune` or `deploykit finetune` wrote, unedited")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _resized(old: nn.Module, spec: dict, name: str) -> nn.Module:
    if isinstance(old, nn.Conv2d) and spec["type"] == "Conv2d":
        return nn.Conv2d(spec["in"], spec["out"], old.kernel_size, old.stride, old.padding, old.dilation,
                         spec["groups"], old.bias is not None, old.padding_mode,
                         dtype=old.weight.dtype, device=old.weight.device)
    if isinstance(old, _BN) and spec["type"] == type(old).__name__:
        return type(old)(spec["features"], old.eps, old.momentum, old.affine, old.track_running_stats)
    if isinstance(old, nn.Linear) and spec["type"] == "Linear":
        return nn.Linear(spec["in"], spec["out"], old.bias is not None, dtype=old.weight.dtype,
                         device=old.weight.device)
    raise DeployKitError(f"the checkpoint's structure describes {name} as {spec['type']}, "
                         f"but this model has a {type(old).__name__} there",
                         fix=f"rebuild with the model it was pruned from ({spec})")


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def structure_metadata(structure: dict) -> dict[str, str]:
    """The safetensors metadata entry for `structure` (nothing for an unpruned model)."""
    return {STRUCTURE_KEY: json.dumps(structure, sort_keys=True)} if structure.get("layers") else {}


def read_metadata(path: Path) -> dict[str, str]:
    """The safetensors header metadata of `path` ({} for other formats or none)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise DeployKitError(f"{path} is not a valid safetensors file: {exc}",
                             fix="re-download or re-save the checkpoint") from exc


def read_structure(path: Path) -> dict | None:
    """The pruned structure stored with the weights at `path`, if any (checked by `apply_structure`)."""
    text = read_metadata(path).get(STRUCTURE_KEY)
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested thousands deep
        raise _bad_structure(f"not JSON ({type(exc).__name__})") from None


def thin_to_checkpoint(model: nn.Module, weights: Path) -> nn.Module:
    """`model` (in place) with the layer shapes stored in the weights file, if it stores any."""
    structure = read_structure(weights)
    return model if structure is None else apply_structure(model, structure)
