"""Fold BatchNorm into the Conv/Linear that feeds it, found in the traced graph."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from deploykit.passes.fold import fold_bn_into
from deploykit.passes.registry import register_pass

_FOLDABLE = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d,
             nn.Linear: nn.BatchNorm1d}


@dataclass(frozen=True)
class FoldBNConfig:
    """No options: folding is exact in eval mode."""


def require_eval(model: nn.Module, pass_name: str) -> None:
    if model.training:
        from deploykit.core.errors import DeployKitError

        raise DeployKitError(f"{pass_name} needs a model in eval mode (folding uses BN running statistics)",
                             fix="call model.eval() first")


@register_pass("fold_bn", FoldBNConfig)
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


def fold_bn_pairs(gm: fx.GraphModule) -> int:
    """Fold every foldable pair in place; the number folded (0: `gm` untouched)."""
    modules = dict(gm.named_modules())
    folded = 0
    for node in list(gm.graph.nodes):
        layer_node = _foldable_producer(node, modules)
        if layer_node is None:
            continue
        layer, bn = modules[layer_node.target], modules[node.target]
        _replace_module(gm, layer_node.target, _folded_layer(layer, bn))
        node.replace_all_uses_with(layer_node)
        gm.graph.erase_node(node)
        folded += 1
    if folded:
        gm.graph.lint()
        gm.recompile()
        gm.delete_all_unused_submodules()
    return folded


def _foldable_producer(node: fx.Node, modules: dict) -> fx.Node | None:
    """The conv/linear node feeding BN `node` if the pair may be folded (the layer has no other user)."""
    if node.op != "call_module" or not node.args or not isinstance(node.args[0], fx.Node):
        return None
    src = node.args[0]
    if src.op != "call_module" or len(src.users) != 1:
        return None
    bn, layer = modules[node.target], modules[src.target]
    expected = _FOLDABLE.get(type(layer))
    return src if expected is not None and type(bn) is expected and bn.track_running_stats else None


def _folded_layer(layer: nn.Module, bn: nn.Module) -> nn.Module:
    weight, bias = fold_bn_into(layer.weight, layer.bias, bn)
    new = copy.deepcopy(layer)
    if new.bias is None:
        new.bias = nn.Parameter(torch.empty(bias.shape, dtype=new.weight.dtype))
    with torch.no_grad():
        new.weight.copy_(weight)  # copy_ casts the float64 fold back to the layer's dtype
        new.bias.copy_(bias)
    return new


def _replace_module(gm: fx.GraphModule, target: str, new: nn.Module) -> None:
    parent_name, _, attr = target.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    setattr(parent, attr, new)
