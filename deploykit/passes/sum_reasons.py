"""Why a sum (or concat, or gate) stays in the graph: a structure that is not a linear multi-branch block by
nature (a residual around a non-linearity, a concatenation, a gate) or a block the pass could not fold."""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from deploykit.passes.constants import constant_value

_MUL = {operator.mul, torch.mul}
_LINEAR_MODULES = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.Identity,
                   nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd, nn.Flatten,
                   nn.modules.dropout._DropoutNd, nn.ZeroPad2d, nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle)
_CAT = {torch.cat, torch.concat}
NONLINEAR = {"relu", "relu6", "gelu", "silu", "sigmoid", "hardswish", "hardsigmoid", "tanh", "leaky_relu",
             "elu", "mish", "softplus", "prelu", "hardtanh", "selu", "celu", "leakyrelu", "softmax", "swish",
             "max_pool2d", "maxpool2d", "adaptive_max_pool2d", "matmul", "bmm", "scaled_dot_product_attention",
             "layer_norm", "layernorm", "group_norm", "groupnorm", "mul", "cat", "div", "clamp", "exp"}


@dataclass
class Left:
    node: fx.Node
    op: str
    reason: str
    unfolded: bool = True  # False: a structure that is not a linear multi-branch block by nature


def describe(node: fx.Node, gm: fx.GraphModule | None = None) -> str:
    """A short name for what `node` computes: the layer type, function or method name."""
    if node.op == "call_module" and gm is not None:
        return type(gm.get_submodule(node.target)).__name__
    if node.op in ("call_function", "call_method"):
        return getattr(node.target, "__name__", str(node.target))
    return node.op


def _is_nonlinear(node: fx.Node) -> bool:
    """Known non-linear, or a module fx could not look into (an opaque attention block may be anything)."""
    if node.op == "call_module":
        module = node.graph.owning_module.get_submodule(node.target)
        return not isinstance(module, _LINEAR_MODULES)
    name = describe(node, node.graph.owning_module).lower().rstrip("_")
    if name in ("mul", "div", "truediv"):  # by a stored constant it is a scale, not a non-linearity
        return all(isinstance(a, fx.Node) and a.op != "get_attr" for a in node.args[:2])
    return name in NONLINEAR


def deeper_left(root: fx.Node, branch_inputs: list[fx.Node], shared: fx.Node) -> Left:
    """Why branches that do more than one conv(+BN) stay: a non-linearity between the block input and a
    branch (a residual around a non-linear body: not a multi-branch block), or a linear chain the merger
    cannot express (reported as unfolded)."""
    nonlinear = _first_nonlinear(branch_inputs, shared)
    if nonlinear is not None:
        return _nonlinear_left(root, nonlinear)
    op = describe(branch_inputs[0], branch_inputs[0].graph.owning_module)
    return Left(root, "add", f"{op} inside a branch: a branch folds only as one conv(+BN), a BN, the identity "
                             "or a channel scale")


def apart_left(root: fx.Node, inputs: set) -> Left:
    """Terms with no common block input: structural when a non-linearity separates them from the nearest
    tensor they all come from."""
    common = _nearest_common_ancestor(list(inputs))
    nonlinear = None if common is None else _first_nonlinear(list(inputs), common)
    if nonlinear is not None:
        return _nonlinear_left(root, nonlinear)
    return Left(root, "add", "the summed terms are computed from different tensors")


def _nonlinear_left(root: fx.Node, nonlinear: fx.Node) -> Left:
    what = describe(nonlinear, nonlinear.graph.owning_module)
    return Left(root, "add", f"non-linearity ({what}) inside a branch: the branch is not linear in the "
                             "block input", unfolded=False)


def _first_nonlinear(starts: list[fx.Node], ancestor: fx.Node) -> fx.Node | None:
    return next((n for start in starts for n in _between(start, ancestor) if _is_nonlinear(n)), None)


def _nearest_common_ancestor(nodes: list[fx.Node]) -> fx.Node | None:
    """The latest node (in graph order) that every one of `nodes` is computed from."""
    common = None
    for node in nodes:
        ancestors = set(_between(node, None)) | {node}
        common = ancestors if common is None else common & ancestors
    if not common:
        return None
    order = {n: i for i, n in enumerate(nodes[0].graph.nodes)}
    return max(common, key=lambda n: order[n])


def _between(node: fx.Node, ancestor: fx.Node) -> list[fx.Node]:
    """The nodes from `node` back to `ancestor` (exclusive)."""
    seen, stack, path = set(), [node], []
    while stack:
        current = stack.pop()
        if current is ancestor or current in seen:
            continue
        seen.add(current)
        path.append(current)
        stack += current.all_input_nodes
    return path


def other_structure(node: fx.Node, gm: fx.GraphModule, cache: dict) -> tuple[str, str] | None:
    """Concats and input-dependent products: structures this pass leaves alone, and why."""
    if node.op == "call_function" and node.target in _CAT:
        return "cat", "concatenation: branches are joined, not summed"
    if is_mul(node) and all(isinstance(a, fx.Node) and constant_value(a, gm, cache) is None for a in node.args):
        return "mul", "product of two computed tensors (e.g. a squeeze-excitation gate)"
    return None


def is_mul(node: fx.Node) -> bool:
    if len(node.args) != 2 or node.kwargs:
        return False
    return (node.op == "call_function" and node.target in _MUL) or (node.op == "call_method"
                                                                    and node.target == "mul")
