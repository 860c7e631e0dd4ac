"""Rewrite a traced graph so that what an op computes, not how its class is written, decides what folds.

Model libraries write the same math many ways: timm's `BatchNormAct2d` subclasses BatchNorm2d and calls
`F.batch_norm` itself (the graph shows a function, not a layer), a frozen BN is `x * scale + shift` on
buffers, shape asserts and `nn.Identity` drops sit between a conv and its norm, branch sums start from `0`
and accumulate in place (`out += conv(x)`). Each rewrite here is exact in eval mode, and the pass that
uses it checks every fold on the tensors of a probe forward all the same.
"""

from __future__ import annotations

import inspect
import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from deploykit.passes.constants import constant_value, fetch_attr
from deploykit.passes.reparam_report import join

_BatchNorm = nn.modules.batchnorm._BatchNorm
_PLAIN_FORWARDS = {_BatchNorm.forward, nn.SyncBatchNorm.forward}  # both are F.batch_norm in eval
_PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                 nn.FeatureAlphaDropout)  # the identity in eval mode
_INPLACE = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul}
_INPLACE_METHODS = {"add_": operator.add, "sub_": operator.sub, "mul_": operator.mul}
_ADDS = {operator.add, torch.add, operator.sub, torch.sub}
_BN_SIGNATURE = inspect.signature(F.batch_norm)


class EvalBatchNorm(_BatchNorm):
    """Batch norm with stored statistics over channel dim 1 of any input of rank >= 2: what a functional
    `batch_norm` call or a frozen per-channel affine computes, as the layer the folds understand."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input of rank 2 or more (got {input.dim()})")


def plain_batchnorm(module: nn.Module) -> bool:
    """A BatchNorm that computes exactly `F.batch_norm` on its running statistics: any `_BatchNorm` whose
    forward is torch's own (BatchNorm1d/2d/3d, SyncBatchNorm, subclasses that keep the forward), in eval."""
    return (isinstance(module, _BatchNorm) and not module.training and module.track_running_stats
            and module.running_mean is not None and module.running_var is not None
            and type(module).forward in _PLAIN_FORWARDS)


def canonicalize(gm: fx.GraphModule, ranks: dict | None = None) -> int:
    """Rewrite `gm` in place; the number of rewrites (0: untouched). `ranks` (node -> tensor rank) lets
    frozen affines `x * scale + shift` become batch norms; without it they stay as they are."""
    count = _drop_asserts(gm) + _functional_inplace(gm) + _bypass_identities(gm) + _drop_zero_terms(gm)
    count += _functional_batchnorms(gm)
    if ranks is not None:
        count += _frozen_affines(gm, ranks)
    if count:
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
    return count


def has_frozen_affine_candidates(gm: fx.GraphModule) -> bool:
    """Whether `canonicalize` needs ranks: some `x * c1 + c2` with constant c1, c2."""
    return any(_affine_parts(node, gm, {}) is not None for node in gm.graph.nodes)


def _drop_asserts(gm: fx.GraphModule) -> int:
    """`torch._assert(x.ndim == 4, ...)`: a shape check that only keeps the conv from its norm."""
    asserts = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is torch._assert]
    for node in asserts:
        gm.graph.erase_node(node)
    return len(asserts)


def _functional_inplace(gm: fx.GraphModule) -> int:
    """`out += y`, `out.add_(y)`, `x.mul_(g)` -> out-of-place ops whose later readers read the result."""
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    count = 0
    for node in list(gm.graph.nodes):
        functional = _INPLACE.get(node.target) if node.op == "call_function" else (
            _INPLACE_METHODS.get(node.target) if node.op == "call_method" else None)
        if functional is None or len(node.args) != 2 or node.kwargs or not isinstance(node.args[0], fx.Node):
            continue
        target = node.args[0]
        for user in [u for u in target.users if u is not node and order[u] > order[node]]:
            user.replace_input_with(target, node)
        node.op, node.target = "call_function", functional
        count += 1
    return count


def _bypass_identities(gm: fx.GraphModule) -> int:
    """nn.Identity and eval-mode dropouts between layers (timm's `drop`/`act` slots) are removed."""
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        module = gm.get_submodule(node.target)
        if isinstance(module, _PASS_THROUGH) and not module.training and isinstance(node.args[0], fx.Node):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            count += 1
    return count


def _drop_zero_terms(gm: fx.GraphModule) -> int:
    """`0 + t` and `t + 0`: what a branch sum that starts from 0 (or skips a None branch) adds."""
    count = 0
    for node in list(gm.graph.nodes):
        if not (node.op == "call_function" and node.target in _ADDS and len(node.args) == 2 and not node.kwargs):
            continue
        a, b = node.args
        is_sub = node.target in (operator.sub, torch.sub)
        kept = a if _is_zero(b) else (b if _is_zero(a) and not is_sub else None)
        if isinstance(kept, fx.Node):
            node.replace_all_uses_with(kept)
            gm.graph.erase_node(node)
            count += 1
    return count


def _is_zero(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0


def _functional_batchnorms(gm: fx.GraphModule) -> int:
    """`F.batch_norm(x, running_mean, running_var, weight, bias, training=False, ...)` on stored tensors
    -> an EvalBatchNorm layer holding copies of them."""
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not F.batch_norm:
            continue
        try:
            bound = _BN_SIGNATURE.bind(*node.args, **node.kwargs).arguments
        except TypeError:
            continue
        names = ("running_mean", "running_var", "weight", "bias")
        tensors = {k: _stored(gm, bound.get(k)) for k in names}
        computed = any(bound.get(k) is not None and tensors[k] is None for k in names)
        if bound.get("training", False) is not False or computed or tensors["running_mean"] is None \
                or tensors["running_var"] is None or not isinstance(bound["input"], fx.Node):
            continue
        bn = _eval_batchnorm(tensors, float(bound.get("eps", 1e-5)))
        _replace_with_layer(gm, node, bn, _owner(bound["running_mean"]), bound["input"])
        count += 1
    return count


def _stored(gm: fx.GraphModule, value):
    """The tensor a get_attr node reads (None for None or anything computed)."""
    if isinstance(value, fx.Node) and value.op == "get_attr":
        tensor = fetch_attr(gm, value.target)
        return tensor if isinstance(tensor, torch.Tensor) else None
    return None


def _eval_batchnorm(t: dict, eps: float) -> EvalBatchNorm:
    mean = t["running_mean"]
    bn = EvalBatchNorm(mean.numel(), eps=eps, device=mean.device, dtype=mean.dtype)
    with torch.no_grad():
        bn.running_mean.copy_(mean.reshape(-1))
        bn.running_var.copy_(t["running_var"].reshape(-1))
        bn.weight.copy_(t["weight"].reshape(-1) if t["weight"] is not None else torch.ones_like(bn.weight))
        bn.bias.copy_(t["bias"].reshape(-1) if t["bias"] is not None else torch.zeros_like(bn.bias))
    return bn.eval()


def _owner(node: fx.Node) -> str:
    return node.target.rpartition(".")[0] if isinstance(node, fx.Node) and node.op == "get_attr" else ""


def _replace_with_layer(gm: fx.GraphModule, node: fx.Node, layer: nn.Module, owner: str,
                        source: fx.Node) -> None:
    name = free_name(gm, join(owner, "as_batchnorm"))
    gm.add_submodule(name, layer)
    with gm.graph.inserting_before(node):
        new = gm.graph.call_module(name, (source,))
    new.meta = dict(node.meta)
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)


def _frozen_affines(gm: fx.GraphModule, ranks: dict) -> int:
    """`x * scale + shift` with both constant and per channel (a frozen BN, torchvision's or timm's)
    -> an EvalBatchNorm with mean 0, variance 1, eps 0 (then it folds like any BN)."""
    count, cache = 0, {}
    for node in list(gm.graph.nodes):
        parts = _affine_parts(node, gm, cache)
        if parts is None:
            continue
        x, scale, shift = parts
        channels = _per_channel_size(scale, shift, ranks.get(x))
        if channels is None:
            continue
        bn = _eval_batchnorm({"running_mean": torch.zeros(channels), "running_var": torch.ones(channels),
                              "weight": scale.reshape(-1).expand(channels).float(),
                              "bias": shift.reshape(-1).expand(channels).float()}, eps=0.0)
        _replace_with_layer(gm, node, bn.to(scale.device), module_owner(node), x)
        count += 1
    return count


def _affine_parts(node: fx.Node, gm: fx.GraphModule, cache: dict):
    """(x, scale, shift) when `node` is x * scale + shift with scale and shift computed from stored tensors."""
    if not (node.op == "call_function" and node.target in (operator.add, torch.add) and len(node.args) == 2
            and not node.kwargs):
        return None
    for product, shift_node in (node.args, node.args[::-1]):
        if not (isinstance(product, fx.Node) and product.op == "call_function" and len(product.users) == 1
                and product.target in (operator.mul, torch.mul) and len(product.args) == 2):
            continue
        shift = constant_value(shift_node, gm, cache)
        for x, scale_node in (product.args, product.args[::-1]):
            scale = constant_value(scale_node, gm, cache)
            if isinstance(x, fx.Node) and constant_value(x, gm, cache) is None and scale is not None \
                    and isinstance(shift, torch.Tensor) and isinstance(scale, torch.Tensor):
                return x, scale, shift
    return None


def _per_channel_size(scale: torch.Tensor, shift: torch.Tensor, rank: int | None) -> int | None:
    """C when both broadcast as (1, C, 1, ...) over an input of `rank` (and leave its shape alone)."""
    sizes = set()
    for t in (scale, shift):
        if t.dim() > (rank or 0) or (t.dim() == rank and t.shape[0] != 1):
            return None
        full = (1,) * ((rank or 0) - t.dim()) + tuple(t.shape)
        if rank is None or rank < 2 or any(s != 1 for i, s in enumerate(full) if i != 1):
            return None
        sizes.add(full[1])
    sizes.discard(1)
    return sizes.pop() if len(sizes) == 1 else None  # all scalars: no channel count to build a norm of


def free_name(gm: nn.Module, name: str) -> str:
    candidate, index = name, 0
    while _has_submodule(gm, candidate):
        index += 1
        candidate = f"{name}_{index}"
    return candidate


def _has_submodule(gm: nn.Module, target: str) -> bool:
    try:
        gm.get_submodule(target)
    except AttributeError:
        return False
    return True


def module_owner(node: fx.Node) -> str:
    """The module whose forward created `node` (fx records the stack while tracing)."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""
