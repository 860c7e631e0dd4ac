"""Model-agnostic re-parameterization over the traced graph: rewrite it so that what each op computes
decides what folds (`canonical`), fold every linear combination of branches that `branch_sums` proves
foldable, then the remaining Conv/Linear-BN pairs; each fold is checked on the tensors one probe forward
produced at that point. Modules fx cannot trace are handled on their own."""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from deploykit.core.compare import Comparison, compare_outputs
from deploykit.core.errors import DeployKitError
from deploykit.passes.branch_sums import Candidate, Left, find_sums, is_linear_branch
from deploykit.passes.canonical import canonicalize, free_name, has_frozen_affine_candidates, module_owner
from deploykit.passes.canonical import plain_batchnorm
from deploykit.passes.fold import NotFoldable, merge_branches, merge_linear_branches
from deploykit.passes.fold_bn import bn_pairs, fold_bn_pairs
from deploykit.passes.fx_trace import (Recorder, callable_children, capture_child_inputs, is_standard_leaf,
                                       node_ranks, trace_with_leaves)
from deploykit.passes.pair_checks import PairChecks, check_reason
from deploykit.passes.reparam_report import FoldedBlock, LeftAlone, ReparamReport, join, where

module_path = module_owner  # the name other modules import


def reparam_graph(module: nn.Module, args: tuple, path: str, report: ReparamReport) -> nn.Module:
    """`module` (mutated, or a GraphModule built over its layers) with what is foldable folded; `args` is
    its input during the probe forward, `path` its place in the whole model."""
    traced = trace_with_leaves(module)
    if traced is None:
        report.traced_separately.append(where(path))
        return _reparam_children(module, args, path, report)
    gm, leaves = traced
    gm = _canonical(gm, args)
    candidates, left = find_sums(gm)
    in_blocks = {b.node for c in candidates for b in c.branches}  # checked with their block
    checks = PairChecks(gm, {bn: pair for bn, pair in bn_pairs(gm).items() if bn not in in_blocks})
    run = _record(gm, args, candidates, left, leaves, checks)
    fused = _fold_blocks(gm, candidates, run, path, report)
    report.left += [_left(x, path) for x in left if run.is_tensor.get(x.node, False)]
    verdicts = {**checks.verdicts, **_check_new_pairs(gm, checks, run, fused)}
    pairs = fold_bn_pairs(gm, {bn: v is True for bn, v in verdicts.items()}, checks.folded)
    report.conv_bn_folded += pairs
    report.left += _stray_batchnorms(gm, path, verdicts)
    result = gm if fused or pairs else module  # unchanged: keep the user's class and its methods
    present = dict(result.named_modules())
    for target in leaves:
        if target in run.leaf_args and target in present:  # a leaf norm may have been folded away
            leaf = result.get_submodule(target)
            result.set_submodule(target, reparam_graph(leaf, run.leaf_args[target], join(path, target), report))
    return result


def _canonical(gm: fx.GraphModule, args: tuple) -> fx.GraphModule:
    """`gm` rewritten by `canonical`, rebuilt so that the stored tensors the rewrites replaced are gone."""
    ranks = run_probe(node_ranks, gm, args) if has_frozen_affine_candidates(gm) else None
    if not canonicalize(gm, ranks):
        return gm
    return fx.GraphModule(gm, gm.graph, gm.__class__.__name__)


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
            leaves: list[str], checks: PairChecks) -> Recorder:
    keep = {c.input for c in candidates} | {c.root for c in candidates}
    keep |= {user for c in candidates for user in c.root.users if _runs_batchnorm(gm, user)}  # fold after
    recorder = Recorder(gm, keep=keep, watch={x.node for x in left}, leaves=leaves, observer=checks.observe)
    if keep or left or leaves or checks.pairs:  # else nothing needs a value: spare the forward
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


def _runs_batchnorm(gm: fx.GraphModule, node: fx.Node) -> bool:
    return node.op == "call_module" and plain_batchnorm(gm.get_submodule(node.target))


def _fold_blocks(gm: fx.GraphModule, candidates: list[Candidate], run: Recorder, path: str,
                 report: ReparamReport) -> dict[fx.Node, fx.Node]:
    """Fold each candidate; {fused conv node: its input node}."""
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
    inputs = {c.root: c.input for c in candidates}
    return {conv: inputs[root] for root, conv in replaced.items()}


def _check_new_pairs(gm: fx.GraphModule, checks: PairChecks, run: Recorder, fused: dict) -> dict:
    """A BN after a folded block (RepViT's `bn(conv(x) + conv1(x) + x)`): the fused conv + BN checked on
    the block's input against what the BN put out."""
    verdicts = {}
    for bn, (layer, where_) in bn_pairs(gm).items():
        source = fused.get(layer)
        if where_ == "after" and source is not None and bn in run.values and source in run.values:
            verdicts[bn] = checks.check_now(bn, (layer, where_), run.values[source], run.values[bn])
    return verdicts


def _fold_one(gm: fx.GraphModule, candidate: Candidate, run: Recorder, replaced: dict,
              path: str) -> FoldedBlock | str:
    """Replace the sum at `candidate.root` by one conv of its input, or say why not."""
    modules, factors = [b.module for b in candidate.branches], [b.coef for b in candidate.branches]
    try:
        if is_linear_branch(modules[0]):
            conv = merge_linear_branches(modules, factors)
        else:
            conv = merge_branches(modules, factors)
    except NotFoldable as exc:
        return exc.reason
    except (ValueError, TypeError) as exc:
        return str(exc)
    check = check_fold(conv, (run.values[candidate.input],), run.values[candidate.root])
    if check is not None and not check:
        return f"probe check failed: {check.summary()}"
    block = module_path(candidate.root)
    name = free_name(gm, join(block, "reparam_conv" if isinstance(conv, nn.Conv2d) else "reparam_linear"))
    gm.add_submodule(name, conv)
    with gm.graph.inserting_before(candidate.root):
        fused = gm.graph.call_module(name, (replaced.get(candidate.input, candidate.input),))
    candidate.root.replace_all_uses_with(fused)
    replaced[candidate.root] = fused
    return FoldedBlock(where(join(path, block)), tuple(b.kind for b in candidate.branches),
                       tuple(getattr(conv, "kernel_size", ())), None if check is None else check.max_rel_err,
                       "graph")


def _left(left: Left, path: str) -> LeftAlone:
    return LeftAlone(where(join(path, module_path(left.node))), left.op, left.reason, left.unfolded)


def _stray_batchnorms(gm: fx.GraphModule, path: str, verdicts: dict) -> list[LeftAlone]:
    """Norms still in the graph: after no conv/linear, or where folding failed its check."""
    modules = dict(gm.named_modules())
    left = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), nn.modules.batchnorm._BatchNorm):
            reason = ("not after a conv/linear it could fold into (or that layer has other users)"
                      if node not in verdicts else check_reason(verdicts[node]))
            left.append(LeftAlone(where(join(path, module_path(node) or node.target)), "batchnorm", reason))
        elif node.op == "call_function" and "batch_norm" in getattr(node.target, "__name__", ""):
            left.append(LeftAlone(where(join(path, module_path(node))), "batchnorm",
                                  "a functional batch_norm in training mode or on computed statistics"))
    return left
