"""Model-agnostic re-parameterization over the traced graph: fold every sum of parallel branches that
`branch_sums` proves foldable, check each fold on the tensors one probe forward produced at that point,
then fold the remaining Conv/Linear -> BN pairs. Modules fx cannot trace are handled on their own."""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from deploykit.core.compare import Comparison, compare_outputs
from deploykit.core.errors import DeployKitError
from deploykit.passes.branch_sums import Candidate, Left, find_sums
from deploykit.passes.fold import NotFoldable, merge_branches
from deploykit.passes.fold_bn import fold_bn_pairs
from deploykit.passes.fx_trace import (Recorder, callable_children, capture_child_inputs, is_standard_leaf,
                                       trace_with_leaves)
from deploykit.passes.reparam_report import FoldedBlock, LeftAlone, ReparamReport, join, where


def reparam_graph(module: nn.Module, args: tuple, path: str, report: ReparamReport) -> nn.Module:
    """`module` (mutated, or a GraphModule built over its layers) with what is foldable folded; `args` is
    its input during the probe forward, `path` its place in the whole model."""
    traced = trace_with_leaves(module)
    if traced is None:
        report.traced_separately.append(where(path))
        return _reparam_children(module, args, path, report)
    gm, leaves = traced
    candidates, left = find_sums(gm)
    run = _record(gm, args, candidates, left, leaves)
    changed = _fold_blocks(gm, candidates, run, path, report)
    report.left += [_left(x, path) for x in left if run.is_tensor.get(x.node, False)]
    pairs = fold_bn_pairs(gm)
    report.conv_bn_folded += pairs
    report.left += _stray_batchnorms(gm, path)
    result = gm if changed or pairs else module  # unchanged: keep the user's class and its methods
    for target in leaves:
        if target in run.leaf_args:
            leaf = result.get_submodule(target)
            result.set_submodule(target, reparam_graph(leaf, run.leaf_args[target], join(path, target), report))
    return result


def _reparam_children(module: nn.Module, args: tuple, path: str, report: ReparamReport) -> nn.Module:
    """An untraceable module: fold inside each child it calls, on the inputs that child received."""
    captured = run_probe(capture_child_inputs, module, args)
    for name, child in callable_children(module):
        if name in captured and not is_standard_leaf(child):
            module.set_submodule(name, reparam_graph(child, captured[name], join(path, name), report))
    return module


def run_probe(fn, module: nn.Module, args: tuple):
    """`fn(module, args)`, where a failure means the probe input does not suit the model."""
    try:
        return fn(module, args)
    except Exception as exc:  # noqa: BLE001 - any failure here is the probe's shape or dtype
        shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
        raise DeployKitError(f"reparameterize could not run the model on a probe input of shape "
                             f"{', '.join(map(str, shapes))}: {type(exc).__name__}: {exc}",
                             fix="pass example_input shaped like the model's real input") from exc


def _record(gm: fx.GraphModule, args: tuple, candidates: list[Candidate], left: list[Left],
            leaves: list[str]) -> Recorder:
    keep = {c.input for c in candidates} | {c.root for c in candidates}
    recorder = Recorder(gm, keep=keep, watch={x.node for x in left}, leaves=leaves)
    if keep or left or leaves:  # else nothing needs a value: spare the forward
        with torch.no_grad():
            run_probe(lambda _, a: recorder.run(*a), gm, args)
    return recorder


@torch.no_grad()
def check_fold(module: nn.Module, args: tuple, expected) -> Comparison | None:
    """The folded module against what the original computed on the same input (None: not comparable,
    e.g. on the meta device)."""
    if not isinstance(expected, torch.Tensor) or expected.is_meta:
        return None
    actual = module(*args)
    return compare_outputs(expected.cpu().numpy(), actual.cpu().numpy(), "fp32")


def _fold_blocks(gm: fx.GraphModule, candidates: list[Candidate], run: Recorder, path: str,
                 report: ReparamReport) -> bool:
    replaced: dict[fx.Node, fx.Node] = {}  # a folded root -> its conv node, for chained blocks
    for candidate in candidates:
        outcome = _fold_one(gm, candidate, run, replaced, path)
        if isinstance(outcome, str):
            report.left.append(_left(Left(candidate.root, "add", outcome), path))
        else:
            report.blocks.append(outcome)
    if replaced:
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
        gm.delete_all_unused_submodules()
    return bool(replaced)


def _fold_one(gm: fx.GraphModule, candidate: Candidate, run: Recorder, replaced: dict,
              path: str) -> FoldedBlock | str:
    """Replace the sum at `candidate.root` by one conv of its input, or say why not."""
    try:
        conv = merge_branches([b.module for b in candidate.branches])
    except NotFoldable as exc:
        return exc.reason
    except (ValueError, TypeError) as exc:
        return str(exc)
    check = check_fold(conv, (run.values[candidate.input],), run.values[candidate.root])
    if check is not None and not check:
        return f"probe check failed: {check.summary()}"
    block = module_path(candidate.root)
    name = _free_name(gm, join(block, "reparam_conv"))
    gm.add_submodule(name, conv)
    with gm.graph.inserting_before(candidate.root):
        fused = gm.graph.call_module(name, (replaced.get(candidate.input, candidate.input),))
    candidate.root.replace_all_uses_with(fused)
    replaced[candidate.root] = fused
    return FoldedBlock(where(join(path, block)), tuple(b.kind for b in candidate.branches),
                       tuple(conv.kernel_size), None if check is None else check.max_rel_err, "graph")


def module_path(node: fx.Node) -> str:
    """The module whose forward created `node` (fx records the stack while tracing)."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _free_name(gm: fx.GraphModule, name: str) -> str:
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


def _left(left: Left, path: str) -> LeftAlone:
    return LeftAlone(where(join(path, module_path(left.node))), left.op, left.reason)


def _stray_batchnorms(gm: fx.GraphModule, path: str) -> list[LeftAlone]:
    modules = dict(gm.named_modules())
    bns = [n for n in gm.graph.nodes
           if n.op == "call_module" and isinstance(modules.get(n.target), nn.modules.batchnorm._BatchNorm)]
    return [LeftAlone(where(join(path, n.target)), "batchnorm",
                      "not after a conv/linear it could fold into (or that layer has other users)") for n in bns]
