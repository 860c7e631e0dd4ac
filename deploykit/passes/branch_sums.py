"""Find, in a traced graph, the sums of parallel branches that read one tensor, and say why the other
sums (and concats, gates, stray BatchNorms) cannot become one conv.

A branch is one of: Conv2d, Conv2d -> BatchNorm2d, BatchNorm2d alone, the input itself, or the input
times a learnt per-channel scale. Each becomes an `nn.Module` that `fold.merge_branches` understands, so
the math stays in one place.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from deploykit.passes.fold import ChannelScale
from deploykit.passes.reparam_report import branch_kind

_ADD = {operator.add, torch.add}
_MUL = {operator.mul, torch.mul}
_CAT = {torch.cat, torch.concat}
NONLINEAR = {"relu", "relu6", "gelu", "silu", "sigmoid", "hardswish", "hardsigmoid", "tanh", "leaky_relu",
             "elu", "mish", "softplus", "prelu", "hardtanh", "selu", "celu", "leakyrelu", "softmax"}


@dataclass
class Branch:
    module: nn.Module  # what merge_branches reads
    input: fx.Node

    @property
    def kind(self) -> str:
        return branch_kind(self.module)


@dataclass
class Candidate:
    """A sum that reads one tensor through foldable branches: `root` becomes a conv of `input`."""

    root: fx.Node
    branches: list[Branch]
    input: fx.Node


@dataclass
class Left:
    node: fx.Node
    op: str
    reason: str


def find_sums(gm: fx.GraphModule) -> tuple[list[Candidate], list[Left]]:
    """Every sum in the graph: the foldable ones, and the rest with the reason they stay."""
    modules = dict(gm.named_modules())
    found = [_judge(node, modules, gm) for node in gm.graph.nodes]
    return [f for f in found if isinstance(f, Candidate)], [f for f in found if isinstance(f, Left)]


def _judge(node: fx.Node, modules: dict, gm: fx.GraphModule) -> Candidate | Left | None:
    if not _is_add(node):
        other = _other_structure(node, gm)
        return None if other is None else Left(node, *other)
    terms = _terms(node) if not _feeds_add(node) else []
    if sum(isinstance(t, fx.Node) for t in terms) < 2:
        return None  # inside a longer chain, or x + 3: a shift, not a sum of branches
    block = _block(node, terms, modules, gm)
    return Left(node, "add", block) if isinstance(block, str) else block


def _is_add(node: fx.Node) -> bool:
    if len(node.args) != 2 or node.kwargs:
        return False  # torch.add(a, b, alpha=...) is not a plain sum
    return (node.op == "call_function" and node.target in _ADD) or (node.op == "call_method"
                                                                    and node.target == "add")


def _is_mul(node: fx.Node) -> bool:
    if len(node.args) != 2 or node.kwargs:
        return False
    return (node.op == "call_function" and node.target in _MUL) or (node.op == "call_method"
                                                                    and node.target == "mul")


def _feeds_add(node: fx.Node) -> bool:
    """Part of a longer chain (x + y + z): the chain is judged once, at its last add."""
    return len(node.users) == 1 and _is_add(next(iter(node.users)))


def _terms(node: fx.Node) -> list:
    terms = []
    for arg in node.args:
        flatten = isinstance(arg, fx.Node) and _is_add(arg) and len(arg.users) == 1
        terms += _terms(arg) if flatten else [arg]
    return terms


def _block(root: fx.Node, terms: list, modules: dict, gm: fx.GraphModule) -> Candidate | str:
    """The candidate rooted at `root`, or why there is none."""
    branches = []
    for term in terms:
        if not isinstance(term, fx.Node):
            if term == 0:
                continue  # builtin sum() starts from 0
            return "a constant term in the sum"
        branch = _branch(term, modules, gm)
        if isinstance(branch, str):
            return branch
        branches.append(branch)
    shared = _shared_input({b.input for b in branches})
    if shared is None:
        return "the summed terms are computed from different tensors"
    deeper = next((b for b in branches if b.input is not shared), None)
    if deeper is not None:
        return _deeper_reason(deeper.input)
    if all(b.kind in ("identity", "bn", "scale") for b in branches):
        return "no conv branch to fold the sum into"
    return Candidate(root, branches, shared)


def _branch(term: fx.Node, modules: dict, gm: fx.GraphModule) -> Branch | str:
    if _calls(term, nn.BatchNorm2d, modules):
        bn = modules[term.target]
        if not bn.track_running_stats:
            return "BatchNorm without running statistics in a branch"
        source = term.args[0]
        if _calls(source, nn.Conv2d, modules) and len(source.users) == 1:
            conv = modules[source.target]
            return Branch(nn.Sequential(conv, bn), source.args[0])
        return Branch(bn, source)
    if _calls(term, nn.Conv2d, modules):
        return Branch(modules[term.target], term.args[0])
    scaled = _scale_operands(term, gm)
    if scaled is not None:
        return Branch(ChannelScale(scaled[1]), scaled[0])
    return Branch(nn.Identity(), term)


def _calls(node, cls: type, modules: dict) -> bool:
    """`node` runs exactly a `cls` layer (not a subclass: it may compute something else) on one input."""
    return (isinstance(node, fx.Node) and node.op == "call_module" and type(modules[node.target]) is cls
            and len(node.args) == 1 and isinstance(node.args[0], fx.Node) and not node.kwargs)


def _scale_operands(node: fx.Node, gm: fx.GraphModule) -> tuple[fx.Node, torch.Tensor] | None:
    """(x, scale) when `node` is x * scale with `scale` a stored per-channel (or scalar) tensor."""
    if not _is_mul(node):
        return None
    a, b = node.args
    if isinstance(a, fx.Node) and a.op == "get_attr":
        a, b = b, a
    if not (isinstance(a, fx.Node) and isinstance(b, fx.Node) and b.op == "get_attr"):
        return None
    scale = _fetch_attr(gm, b.target)
    if not isinstance(scale, torch.Tensor):
        return None
    # (C, 1, 1) and (1, C, 1, 1) broadcast over channels only; (C,) would scale along the width.
    per_channel = scale.dim() in (3, 4) and all(s == 1 for s in (*scale.shape[:-3], *scale.shape[-2:]))
    return (a, scale) if scale.numel() == 1 or per_channel else None


def _fetch_attr(gm: fx.GraphModule, target: str):
    value = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _shared_input(inputs: set) -> fx.Node | None:
    """The input every other branch input is computed from (the block input), if there is one."""
    for candidate in inputs:
        if all(other is candidate or _depends_on(other, candidate) for other in inputs):
            return candidate
    return None


def _depends_on(node: fx.Node, ancestor: fx.Node) -> bool:
    seen, stack = set(), [node]
    while stack:
        current = stack.pop()
        if current is ancestor:
            return True
        if current not in seen:
            seen.add(current)
            stack += current.all_input_nodes
    return False


def describe(node: fx.Node, gm: fx.GraphModule | None = None) -> str:
    """A short name for what `node` computes: the layer type, function or method name."""
    if node.op == "call_module" and gm is not None:
        return type(gm.get_submodule(node.target)).__name__
    if node.op in ("call_function", "call_method"):
        return getattr(node.target, "__name__", str(node.target))
    return node.op


def _deeper_reason(branch_input: fx.Node) -> str:
    op = describe(branch_input, branch_input.graph.owning_module)
    if op.lower().rstrip("_") in NONLINEAR:
        return f"non-linearity ({op}) inside a branch: the branch is not linear in the block input"
    return (f"{op} inside a branch: a branch folds only as one conv(+BN), a BN, the identity or a "
            "channel scale")


def _other_structure(node: fx.Node, gm: fx.GraphModule) -> tuple[str, str] | None:
    """Concats and input-dependent products: structures this pass leaves alone, and why."""
    if node.op == "call_function" and node.target in _CAT:
        return "cat", "concatenation: branches are joined, not summed"
    if _is_mul(node) and all(isinstance(a, fx.Node) and a.op != "get_attr" for a in node.args):
        return "mul", "product of two computed tensors (e.g. a squeeze-excitation gate)"
    return None
