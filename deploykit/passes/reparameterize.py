"""Multi-branch training blocks (RepVGG, MobileOne, ACNet, DBB-like, ...) -> one conv each, for any model.

Generic path: the model is traced (torch.fx; modules that do not trace are looked into separately) and
every sum of parallel conv / conv-BN / BN / identity / channel-scale branches reading one tensor becomes
one conv (`graph_reparam`); Conv/Linear -> BN pairs are folded too. Everything else stays, with the
reason in the report. Protocol fast path: a block that offers `reparam_branches()` and
`reparam_rebuild(conv)` is merged from what it declares. Both paths use `fold.merge_branches`, and each
fold is checked on the block's own input during one probe forward. Fallback: a block the generic path
leaves unfolded that has its own `fuse()`/`reparameterize()`/`switch_to_deploy()` (timm's) is folded by
it, checked the same way; the report names the path that folded each block ("graph", "protocol",
"own-method").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from deploykit.passes.fold import merge_branches
from deploykit.passes.fold_bn import require_eval
from deploykit.passes.fx_trace import clone_tensors
from deploykit.passes.graph_reparam import check_fold, reparam_graph, run_probe
from deploykit.passes.own_methods import blocks_to_refold, refold_block
from deploykit.passes.registry import PassResult, register_pass
from deploykit.passes.reparam_report import FoldedBlock, ReparamReport, branch_kind, where

PROBE_SIZE = 64  # default probe: (1, C, 64, 64), C from the first conv


@dataclass(frozen=True)
class ReparameterizeConfig:
    """`use_protocol`: merge blocks that declare their branches directly (fast, same result).
    `use_own_methods`: where the generic path leaves a block unfolded, fall back to the block's own
    `fuse()` / `reparameterize()` / `switch_to_deploy()` (checked like every fold)."""

    use_protocol: bool = True
    use_own_methods: bool = True


def is_multibranch(module: nn.Module) -> bool:
    return callable(getattr(module, "reparam_branches", None)) and callable(getattr(module, "reparam_rebuild", None))


def reparameterize(model: nn.Module, config: ReparameterizeConfig = ReparameterizeConfig(), *,
                   example_input: torch.Tensor | None = None) -> nn.Module:
    """A deploy-form copy of `model`: every foldable multi-branch block merged into one conv and every
    Conv/Linear -> BN pair folded. Input untouched."""
    return reparameterize_with_report(model, example_input, config=config)[0]


@register_pass(ReparameterizeConfig, takes_probe=True, public=reparameterize)
def _reparameterize_step(model: nn.Module, config: ReparameterizeConfig, *,
                         example_input: torch.Tensor | None = None) -> PassResult:
    """`reparameterize` as the runner calls it: the deploy-form model with its report (for the manifest)."""
    deployed, report = reparameterize_with_report(model, example_input, config=config)
    return PassResult(deployed, report.to_dict())


def reparameterize_with_report(model: nn.Module, example_input: torch.Tensor | tuple | None = None, *,
                               config: ReparameterizeConfig = ReparameterizeConfig()
                               ) -> tuple[nn.Module, ReparamReport]:
    """`reparameterize`, plus what was folded (with each block's checked error) and what was left, why.

    `example_input` (default: a (1, C, 64, 64) randn, C from the first conv) is run once; each fold is
    checked on the input its block received."""
    require_eval(model, "reparameterize")
    args = _example_args(model, example_input)
    if args is None:  # no conv or linear layer: nothing to fold
        return copy.deepcopy(model).eval(), ReparamReport()
    deployed, report = _generic(model, args, config, {})
    refold = blocks_to_refold(model, report.unfolded) if config.use_own_methods else {}
    if refold:  # once more, with those blocks folded by their own methods first
        deployed, report = _generic(model, args, config, refold)
    return deployed, report


def _generic(model: nn.Module, args: tuple, config: ReparameterizeConfig,
             refold: dict[str, nn.Module]) -> tuple[nn.Module, ReparamReport]:
    model, report = copy.deepcopy(model), ReparamReport()
    if refold:
        model = _refold_own(model, args, list(refold), report)
    if config.use_protocol:
        model = _merge_protocol_blocks(model, args, report)
    return reparam_graph(model, args, "", report).eval(), report


def _refold_own(model: nn.Module, args: tuple, names: list[str], report: ReparamReport) -> nn.Module:
    """The blocks `names` folded by their own methods, each checked on its captured input and output."""
    blocks = {name: model.get_submodule(name) for name in names}
    io = run_probe(lambda m, a: _capture_block_io(m, a, blocks), model, args)
    for name, block in blocks.items():
        folded, record = refold_block(block, io.get(name), name, check_fold)
        if folded is None:
            report.left.append(record)
            continue
        report.blocks.append(record)
        if not name:
            return folded
        model.set_submodule(name, folded)
    return model


def _example_args(model: nn.Module, example_input) -> tuple | None:
    if example_input is not None:
        return tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    layers = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    first = next((m for m in model.modules() if isinstance(m, layers)), None)
    if first is None:
        return None
    if isinstance(first, nn.Linear):
        shape = (1, first.in_features)
    else:
        spatial = first.weight.dim() - 2  # 3-D convs get a smaller cube: 64**3 voxels is a lot of probe
        shape = (1, first.in_channels, *[PROBE_SIZE if spatial < 3 else PROBE_SIZE // 4] * spatial)
    probe = torch.randn(*shape, generator=torch.Generator().manual_seed(0), device="cpu")
    return (probe.to(device=first.weight.device, dtype=first.weight.dtype),)


def _merge_protocol_blocks(model: nn.Module, args: tuple, report: ReparamReport) -> nn.Module:
    """The fast path: each outermost protocol block merged from its declared branches and checked on its
    captured input/output. A block that does not merge or check is left to the generic path."""
    blocks = _outermost_blocks(model)
    if not blocks:
        return model
    io = run_probe(lambda m, a: _capture_block_io(m, a, blocks), model, args)
    for name, block in blocks.items():
        rebuilt, folded = _merge_block(block, io.get(name), name)
        if folded is None:
            continue
        report.blocks.append(folded)
        if not name:
            return rebuilt  # the model itself is the block
        model.set_submodule(name, rebuilt)
    return model


def _merge_block(block: nn.Module, io: tuple | None,
                 name: str) -> tuple[nn.Module | None, FoldedBlock | None]:
    branches = list(block.reparam_branches())
    try:
        conv = merge_branches(branches)
    except (ValueError, TypeError):  # NotFoldable included: the generic path will say why
        return None, None
    rebuilt = block.reparam_rebuild(conv)
    check = None if io is None else check_fold(rebuilt, *io)
    if check is not None and not check:
        return None, None
    error = None if check is None else check.max_rel_err
    return rebuilt, FoldedBlock(where(name), tuple(branch_kind(b) for b in branches), tuple(conv.kernel_size),
                                error, "protocol")


def _outermost_blocks(model: nn.Module) -> dict[str, nn.Module]:
    blocks: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        inside = any(name.startswith(f"{outer}.") or not outer for outer in blocks)
        if is_multibranch(module) and not inside:
            blocks[name] = module
    return blocks


@torch.no_grad()
def _capture_block_io(model: nn.Module, args: tuple, blocks: dict[str, nn.Module]) -> dict[str, tuple]:
    """One forward: each block's first (input args, output), copied as they were at that moment."""
    inputs: dict[str, tuple] = {}
    io: dict[str, tuple] = {}

    def hooks_for(name: str):
        def before(_module, hook_args):
            inputs.setdefault(name, clone_tensors(hook_args))

        def after(_module, _args, output):
            io.setdefault(name, (inputs[name], clone_tensors(output)))
        return before, after

    handles = []
    for name, block in blocks.items():
        before, after = hooks_for(name)
        handles += [block.register_forward_pre_hook(before), block.register_forward_hook(after)]
    try:
        model(*args)
    finally:
        for handle in handles:
            handle.remove()
    return io
