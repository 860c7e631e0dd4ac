"""Find, in a traced graph, the linear combinations of parallel branches that read one tensor, and say why
the other sums (and concats, gates, stray BatchNorms) cannot become one conv.

A sum is any tree of `+`, `-`, unary minus and products with a stored per-channel constant (FastViT's
`x + gamma * (mixer(x) - norm(x))` is one), however it was spelled: `sum()`, `torch.add`, loops of `+=`
(the graph was made functional by `canonical`). Each term is one of: Conv2d, Conv2d -> BatchNorm, a
BatchNorm alone, or the input itself, times its constant factor. Each becomes an `nn.Module` that
`fold.merge_branches` understands, so the math stays in one place.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from deploykit.passes.canonical import plain_batchnorm
from deploykit.passes.constants import constant_value
from deploykit.passes.reparam_report import branch_kind
from deploykit.passes.sum_reasons import Left, apart_left, deeper_left, is_mul, other_structure

_ADD = {operator.add, torch.add}
_SUB = {operator.sub, torch.sub}
_NEG = {operator.neg, torch.neg}


@dataclass
class Branch:
    module: nn.Module  # what merge_branches reads
    input: fx.Node
    coef: torch.Tensor | None = None  # its constant factor per output channel (or one for all); None: 1
    node: fx.Node | None = None  # the summed term when it is a layer of the branch (not the identity)

    @property
    def kind(self) -> str:
        base = branch_kind(self.module)
        if self.coef is None:
            return base
        if base == "identity":
            return "scale"
        return f"-{base}" if self.coef.numel() == 1 and float(self.coef) == -1.0 else f"{base}*scale"


@dataclass
class Candidate:
    """A sum that reads one tensor through foldable branches: `root` becomes a conv of `input`."""

    root: fx.Node
    branches: list[Branch]
    input: fx.Node


def find_sums(gm: fx.GraphModule) -> tuple[list[Candidate], list[Left]]:
    """Every sum in the graph: the foldable ones, and the rest with the reason they stay."""
    modules = dict(gm.named_modules())
    cache: dict = {}
    found = [f for node in gm.graph.nodes for f in _judge(node, modules, gm, cache)]
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    candidates = sorted((f for f in found if isinstance(f, Candidate)), key=lambda c: order[c.root])
    return candidates, [f for f in found if isinstance(f, Left)]


def _judge(node: fx.Node, modules: dict, gm: fx.GraphModule, cache: dict) -> list[Candidate | Left]:
    if _linear_operands(node, gm, cache) is None or _absorbed(node, gm, cache):
        other = other_structure(node, gm, cache)
        return [] if other is None else [Left(node, *other, unfolded=False)]
    return _judge_top(node, modules, gm, cache)


def _judge_top(node: fx.Node, modules: dict, gm: fx.GraphModule, cache: dict) -> list[Candidate | Left]:
    """The combination rooted at `node`; when it does not fold as a whole (a block inside a residual), each
    sum inside it is judged on its own."""
    expanded: set = set()
    terms = _terms(node, None, gm, cache, root=node, expanded=expanded)
    terms = [(t, c) for t, c in terms if not _is_zero(t)]
    if sum(isinstance(t, fx.Node) and constant_value(t, gm, cache) is None for t, _ in terms) < 2:
        return []  # x + 3, or attention scores + a stored bias: a shift, not a sum of branches
    outcome = _block(node, terms, modules)
    if isinstance(outcome, Candidate):
        return [outcome]
    inner = [f for s in _inner_sums(node, expanded, gm, cache) for f in _judge_top(s, modules, gm, cache)]
    if outcome.unfolded:  # the parts' reasons are this one's: report it once
        inner = [f for f in inner if isinstance(f, Candidate)]
    return [outcome, *inner]


def _is_zero(term) -> bool:
    return isinstance(term, (int, float)) and not isinstance(term, bool) and term == 0


def _inner_sums(node: fx.Node, expanded: set, gm: fx.GraphModule, cache: dict):
    """The first sums below `node` among the nodes its flattening went through."""
    for operand, _, _ in _linear_operands(node, gm, cache) or []:
        if operand in expanded:
            yield from ([operand] if _is_sum(operand) else _inner_sums(operand, expanded, gm, cache))


def _is_sum(node: fx.Node) -> bool:
    if len(node.args) != 2 or node.kwargs:
        return False  # torch.add(a, b, alpha=...) is not a plain sum
    return (node.op == "call_function" and node.target in _ADD | _SUB) or (
        node.op == "call_method" and node.target in ("add", "sub"))


def _linear_operands(node: fx.Node, gm: fx.GraphModule, cache: dict) -> list | None:
    """[(operand, sign, constant factor)] when `node` is a linear op of its computed operands."""
    if _is_sum(node):
        a, b = node.args
        minus = node.target in _SUB or node.target == "sub"
        return [(a, 1.0, None), (b, -1.0 if minus else 1.0, None)]
    if node.op in ("call_function", "call_method") and (node.target in _NEG or node.target == "neg") \
            and len(node.args) == 1:
        return [(node.args[0], -1.0, None)]
    if _is_div(node):
        factor = constant_value(node.args[1], gm, cache)
        if constant_value(node.args[0], gm, cache) is None and _channel_factor(factor):
            return [(node.args[0], 1.0, 1.0 / torch.as_tensor(factor).detach().double())]
    if is_mul(node):
        for x, c in (node.args, node.args[::-1]):
            factor = constant_value(c, gm, cache)
            if isinstance(x, fx.Node) and constant_value(x, gm, cache) is None and _channel_factor(factor):
                return [(x, 1.0, torch.as_tensor(factor).detach().double())]
    return None


def _is_div(node: fx.Node) -> bool:
    return (len(node.args) == 2 and not node.kwargs and isinstance(node.args[0], fx.Node)
            and ((node.op == "call_function" and node.target in (operator.truediv, torch.div))
                 or (node.op == "call_method" and node.target == "div")))


def _channel_factor(factor) -> bool:
    """A scalar, or a tensor shaped (C, 1, 1) / (1, C, 1, 1): it scales channels only."""
    if isinstance(factor, (int, float)) and not isinstance(factor, bool):
        return True
    if not isinstance(factor, torch.Tensor) or not factor.is_floating_point():
        return False
    return factor.numel() == 1 or (factor.dim() in (3, 4) and all(
        s == 1 for s in (*factor.shape[:-3], *factor.shape[-2:])))


def _absorbed(node: fx.Node, gm: fx.GraphModule, cache: dict) -> bool:
    """Part of a larger linear combination (x + y + z, g * (a - b)): judged once, at its top."""
    if len(node.users) != 1:
        return False
    user = next(iter(node.users))
    operands = _linear_operands(user, gm, cache)
    return operands is not None and any(o is node for o, _, _ in operands)


def _terms(node, coef: torch.Tensor | None, gm: fx.GraphModule, cache: dict, *, root=None,
           expanded: set | None = None) -> list:
    """[(term, factor)]: `node` flattened through the linear ops only it reads (added to `expanded`)."""
    operands = None
    if isinstance(node, fx.Node) and (node is root or len(node.users) == 1):
        operands = _linear_operands(node, gm, cache)
    if operands is None:
        return [(node, coef)]
    if expanded is not None:
        expanded.add(node)
    terms = []
    for operand, sign, factor in operands:
        scaled = coef if factor is None else (factor if coef is None else _times(coef, factor))
        scaled = scaled if sign == 1.0 else -(torch.ones(1, dtype=torch.float64) if scaled is None else scaled)
        terms += _terms(operand, scaled, gm, cache, expanded=expanded)
    return terms


def _times(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.reshape(-1) * b.reshape(-1)) if a.numel() == b.numel() or 1 in (a.numel(), b.numel()) else a * b


def _block(root: fx.Node, terms: list, modules: dict) -> Candidate | Left:
    """The candidate rooted at `root`, or why there is none."""
    branches = []
    for term, coef in terms:
        if not isinstance(term, fx.Node) or constant_value(term, term.graph.owning_module, {}) is not None:
            return Left(root, "add", "a constant term in the sum", unfolded=False)
        branches.append(_branch(term, modules, coef))
    inputs = {b.input for b in branches}
    shared = _shared_input(inputs)
    if shared is None:
        return apart_left(root, inputs)
    deeper = [b.input for b in branches if b.input is not shared]
    if deeper:
        return deeper_left(root, deeper, shared)
    if all(branch_kind(b.module) in ("identity", "bn") for b in branches):
        return Left(root, "add", "no conv branch to fold the sum into", unfolded=False)
    linear = [is_linear_branch(b.module) for b in branches]
    if any(linear) and not all(linear):
        return Left(root, "add", "Linear branches summed with other kinds of branch")
    return Candidate(root, branches, shared)


def is_linear_branch(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Linear) for m in module.modules())


def _branch(term: fx.Node, modules: dict, coef: torch.Tensor | None) -> Branch:
    if len(term.users) > 1:  # read elsewhere too: the block input itself (e.g. a stem's BN output)
        return Branch(nn.Identity(), term, coef)
    if _calls_batchnorm(term, modules):
        bn, source = modules[term.target], term.args[0]
        if _calls(source, nn.Conv2d, modules) and len(source.users) == 1:
            return Branch(nn.Sequential(modules[source.target], bn), source.args[0], coef, term)
        return Branch(bn, source, coef, term)
    if _calls(term, nn.Conv2d, modules):
        return Branch(modules[term.target], term.args[0], coef, term)
    if _calls(term, nn.Linear, modules):
        source = term.args[0]
        if _calls_batchnorm(source, modules) and len(source.users) == 1:
            return Branch(nn.Sequential(modules[source.target], modules[term.target]), source.args[0], coef, term)
        return Branch(modules[term.target], source, coef, term)
    return Branch(nn.Identity(), term, coef)


def _calls(node, cls: type, modules: dict) -> bool:
    """`node` runs exactly a `cls` layer (not a subclass: it may compute something else) on one input."""
    return (isinstance(node, fx.Node) and node.op == "call_module" and type(modules[node.target]) is cls
            and len(node.args) == 1 and isinstance(node.args[0], fx.Node) and not node.kwargs)


def _calls_batchnorm(node, modules: dict) -> bool:
    return (isinstance(node, fx.Node) and node.op == "call_module" and plain_batchnorm(modules[node.target])
            and len(node.args) == 1 and isinstance(node.args[0], fx.Node) and not node.kwargs)


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


