"""Fold BatchNorm into the Conv/Linear that feeds it (or the Linear / unpadded conv it feeds), found in
the traced graph.

A norm is recognised by what it computes (`canonical.plain_batchnorm`), not by its exact class."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch.fx as fx
from torch import nn

from deploykit.passes.canonical import plain_batchnorm
from deploykit.passes.fold import affine_before, bn_affine, fold_bn_into
from deploykit.passes.registry import register_pass

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)  # a norm after them folds into weight and bias
_RESHAPES = {"flatten", "reshape", "view"}
_SHAPE_ONLY = {"reshape_as", "view_as", "expand_as"}


@dataclass(frozen=True)
class FoldBNConfig:
    """No options: folding is exact in eval mode."""


def require_eval(model: nn.Module, pass_name: str) -> None:
    if model.training:
        from deploykit.core.errors import DeployKitError

        raise DeployKitError(f"{pass_name} needs a model in eval mode (folding uses BN running statistics)",
                             fix="call model.eval() first")


@register_pass(FoldBNConfig)
def fold_bn(model: nn.Module, config: FoldBNConfig = FoldBNConfig()) -> nn.Module:
    """A copy of `model` where every Conv/Linear -> BatchNorm pair is one layer. Input untouched."""
    require_eval(model, "fold_bn")
    return _fold_in_place(copy.deepcopy(model)).eval()


def _fold_in_place(module: nn.Module) -> nn.Module:
    """Trace `module`; where tracing fails, descend and fold its children instead (kept as leaves)."""
    try:
        graph_module = fx.symbolic_trace(module)
    except Exception:  # noqa: BLE001 - any tracing failure means "treat children separately"
        for name, child in module.named_children():
            setattr(module, name, _fold_in_place(child))
        return module
    if not fold_bn_pairs(graph_module):
        return module  # nothing folded: keep the original class (and its methods) intact
    return graph_module


def bn_pairs(gm: fx.GraphModule) -> dict[fx.Node, tuple[fx.Node, str]]:
    """Every foldable pair: BN node -> (its layer's node, "after" for layer -> BN, "before" for BN -> Linear)."""
    modules = dict(gm.named_modules())
    pairs = {}
    for node in gm.graph.nodes:
        layer = _foldable_producer(node, modules)
        if layer is not None:
            pairs[node] = (layer, "after")
        elif _is_bn(node, modules) and len(node.users) == 1:
            user = next(iter(node.users))
            if _takes_norm_before(user, modules) and user.args[0] is node:
                pairs[node] = (user, "before")
    return pairs


def fold_bn_pairs(gm: fx.GraphModule, verdicts: dict | None = None, folded_layers: dict | None = None) -> int:
    """Fold every foldable pair in place; the number folded (0: `gm` untouched). With `verdicts` (BN node
    -> whether folding it kept the pair's output on the probe), only pairs that passed are folded, and a
    BN before a Linear (exact only when the norm's channels are the Linear's features) is folded too.
    `folded_layers` (BN node -> the folded layer the check ran) spares computing a fold twice."""
    folded_layers = folded_layers or {}
    folded, modules = 0, dict(gm.named_modules())
    for bn_node, (layer_node, where) in bn_pairs(gm).items():
        passed = verdicts is None or verdicts.get(bn_node) is True
        if not passed or (where == "before" and verdicts is None):
            continue
        layer, bn = modules[layer_node.target], modules[bn_node.target]
        cached = folded_layers.get(bn_node)
        if cached is None or cached[0] is not layer:  # a Linear may take a norm on each side: fold the new one
            cached = (layer, folded_pair(layer, bn, where))
        modules[layer_node.target] = cached[1]
        _replace_module(gm, layer_node.target, modules[layer_node.target])
        if where == "after":
            bn_node.replace_all_uses_with(bn_node.args[0])  # the layer, or the reshape of it
        else:
            layer_node.replace_input_with(bn_node, bn_node.args[0])
        gm.graph.erase_node(bn_node)
        folded += 1
    if folded:
        gm.graph.lint()
        gm.recompile()
        gm.delete_all_unused_submodules()
    return folded


def _takes_norm_before(node, modules: dict) -> bool:
    """A Linear, or a conv without padding (NextViT's BN -> 1x1 conv): a norm before it folds into it."""
    if _is_layer(node, modules, (nn.Linear,)):
        return True
    if not _is_layer(node, modules, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return False
    padding = modules[node.target].padding
    return padding == "valid" or (not isinstance(padding, str) and not any(padding))


def _is_bn(node: fx.Node, modules: dict) -> bool:
    return (node.op == "call_module" and plain_batchnorm(modules[node.target]) and len(node.args) == 1
            and isinstance(node.args[0], fx.Node) and not node.kwargs)


def _is_layer(node, modules: dict, types: tuple) -> bool:
    return (isinstance(node, fx.Node) and node.op == "call_module" and type(modules[node.target]) in types
            and len(node.args) == 1 and not node.kwargs)


def _foldable_producer(node: fx.Node, modules: dict) -> fx.Node | None:
    """The conv/linear node feeding BN `node` if the pair may be folded (nothing else reads the layer's
    values). A Linear may reach its norm through a reshape that merges leading dims (LeViT's
    `bn(linear(x).flatten(0, 1))`): its features stay the last dim; the probe check confirms it."""
    if not _is_bn(node, modules):
        return None
    src = node.args[0]
    if (isinstance(src, fx.Node) and src.op == "call_method" and src.target in _RESHAPES
            and len(src.users) == 1 and _is_layer(src.args[0], modules, (nn.Linear,))):
        src = src.args[0]
    if not _is_layer(src, modules, _LAYERS) or len(value_users(src)) != 1:
        return None
    return src


def value_users(node: fx.Node) -> list[fx.Node]:
    """The users that read `node`'s values (not only its shape, as `y.reshape_as(node)` does)."""
    return [u for u in node.users if not (u.op == "call_method" and u.target in _SHAPE_ONLY
                                          and len(u.args) > 1 and u.args[0] is not node)]


def folded_pair(layer: nn.Module, bn: nn.Module, where: str = "after") -> nn.Module:
    """`layer` with `bn` folded in: after it (conv/linear -> BN) or before it (BN -> linear). A shallow
    copy with new weight and bias (a deepcopy per pair costs more than the fold)."""
    if where == "after":
        weight, bias = fold_bn_into(layer.weight, layer.bias, bn)
    else:
        weight, bias = affine_before(layer.weight, layer.bias, *bn_affine(bn), getattr(layer, "groups", 1))
    new = copy.copy(layer)
    new._parameters = dict(layer._parameters)
    dtype = layer.weight.dtype  # the float64 fold cast back to the layer's dtype
    new.weight = nn.Parameter(weight.to(dtype), requires_grad=layer.weight.requires_grad)
    new.bias = nn.Parameter(bias.to(dtype), requires_grad=layer.weight.requires_grad)
    return new


def _replace_module(gm: fx.GraphModule, target: str, new: nn.Module) -> None:
    parent_name, _, attr = target.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    setattr(parent, attr, new)
