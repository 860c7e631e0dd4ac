"""Structured channel pruning: remove whole output channels, keeping every coupled layer consistent.

Engine: Torch-Pruning's DependencyGraph (Fang et al. 2023, "DepGraph: Towards Any Structural Pruning",
CVPR 2023; PyPI `torch-pruning`). It traces the model once and groups every layer whose channels must go
together: the branches of a block that are summed, residual adds, VoVNet concatenations (with offsets),
depthwise convs (in = out = groups), squeeze-excitation gates. We use it for the dependency groups only and
choose the channels ourselves: per group, `round_to`-rounded (to nearest) counts of the lowest-importance
channels, never fewer than `round_to` kept. Three things it does not handle are fenced off, so that what
it does touch is always exact:
- classifiers (every nn.Linear) keep their outputs; their inputs shrink with the last stage;
- true grouped convs (1 < groups < channels) made Torch-Pruning raise an IndexError here: their output
  group and the group feeding their input are left unpruned;
- channel-shifting functional ops it cannot see, such as the CIFAR ResNets' "option A" shortcut, which
  zero-pads the residual stream to the next stage's width: a model lists the layers whose outputs feed
  such a stream through `prune_fixed_layers()`, and those groups stay whole (for the ResNets: block-internal
  channels are pruned, as in He et al. 2017 "Channel Pruning" and ThiNet).
`tests/passes/test_prune.py` checks every zoo model against an oracle: zeroing the chosen channels in the
unpruned model must give the pruned model's output.

Why before re-parameterization, on the training form: fine-tuning after pruning needs the training form.
A re-parameterized, BN-folded net has neither BatchNorm nor the over-parameterized branches that make
MobileOne and RepVGG train well (both papers report a clear drop when the deploy form is trained
directly), so pruning the deploy form would leave a net that fine-tunes badly. On the training form, the
dependency graph sees the branch sum, so each branch loses the same channels (branch-consistent masks) and
the group's importance is measured over all branches together; the pruned model is still a training-form
zoo model, its checkpoint reloads through `deploykit.zoo.structure`, and the unchanged reparameterize and
fold_bn passes take it to deploy form. The cost: an identity (BN) branch ties a block's input channels to its
output channels, so a stage of same-width blocks is one group, exactly like a residual stream.

Importance ("l1", "l2": norms of the group's weights; "bn_scale": |gamma| of its BatchNorms; "taylor":
|weight x gradient| (Molchanov et al. 2019) of the cross-entropy on a labelled batch). Taylor needs
gradients, so it needs `example_input` to be real images and `labels`; the registered pass, which has no
data, refuses it. Gradients are taken on a copy in eval mode (BN statistics untouched).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.core.errors import DeployKitError, import_backend
from deploykit.passes.registry import register_pass

Importance = Literal["l1", "l2", "bn_scale", "taylor"]
IMPORTANCES = ("l1", "l2", "bn_scale", "taylor")
MAX_RATIO = 0.95  # a target-MACs search never asks for more


@dataclass(frozen=True)
class PruneConfig:
    """`ratio`: fraction of each prunable group's channels to remove; or `target_macs`: the largest MAC
    count (deploykit.profile.count_cost, at `input_size`) allowed, reached with the smallest uniform ratio.
    `ignore`: module names (or prefixes) whose output channels stay. `input_size` builds the tracing input
    of the registered pass."""

    ratio: float | None = None
    target_macs: int | None = None
    importance: Importance = "l1"
    round_to: int = 8
    ignore: tuple[str, ...] = ()
    input_size: int = 224

    def __post_init__(self) -> None:
        if (self.ratio is None) == (self.target_macs is None):
            raise DeployKitError("pruning needs exactly one of ratio and target_macs", fix="e.g. --prune 0.3")
        if self.ratio is not None and not 0 <= self.ratio < 1:
            raise DeployKitError(f"pruning ratio must be in [0, 1), got {self.ratio}", fix="e.g. --prune 0.3")
        if self.target_macs is not None and self.target_macs <= 0:
            raise DeployKitError(f"target_macs must be positive, got {self.target_macs}", fix="e.g. 60_000_000")
        if self.importance not in IMPORTANCES:
            raise DeployKitError(f"unknown importance {self.importance!r}", fix=f"use one of {', '.join(IMPORTANCES)}")
        if self.round_to < 1:
            raise DeployKitError(f"round_to must be >= 1, got {self.round_to}", fix="e.g. 8")
        object.__setattr__(self, "ignore", tuple(self.ignore))


def _options(config: PruneConfig) -> dict:
    return {"ratio": config.ratio, "target_macs": config.target_macs, "importance": config.importance,
            "round_to": config.round_to, "ignore": config.ignore}


def prune_channels(model: nn.Module, example_input: torch.Tensor, *, ratio: float | None = None,
                   target_macs: int | None = None, importance: Importance = "l1", round_to: int = 8,
                   ignore: tuple[str, ...] = (), labels: torch.Tensor | None = None) -> nn.Module:
    """A pruned copy of `model` (eval mode); `model` is untouched. See the module docstring."""
    config = PruneConfig(ratio=ratio, target_macs=target_macs, importance=importance, round_to=round_to,
                         ignore=tuple(ignore), input_size=example_input.shape[-1])
    if importance == "taylor" and labels is None:
        raise DeployKitError("taylor importance needs labels for example_input",
                             fix="pass labels=..., or use l1, l2 or bn_scale")
    if target_macs is None:
        return _prune_copy(model, example_input, config, ratio, labels)
    return _prune_to_macs(model, example_input, config, labels)


@register_pass(PruneConfig, public=prune_channels)
def _prune_step(model: nn.Module, config: PruneConfig) -> nn.Module:
    """`prune_channels` as the runner calls it: traced with a zero batch of `config.input_size`."""
    if config.importance == "taylor":
        raise DeployKitError("taylor importance needs labelled images, which a pass has no access to",
                             fix="call prune_channels(model, images, labels=..., importance='taylor')")
    channels = _first_conv(model).in_channels
    probe = torch.zeros(1, channels, config.input_size, config.input_size)
    return prune_channels(model, probe, **_options(config))


def _prune_to_macs(model: nn.Module, example_input: torch.Tensor, config: PruneConfig, labels) -> nn.Module:
    """The smallest uniform ratio (bisection, to 1e-3) whose pruned model fits `target_macs`."""
    size = tuple(example_input.shape[-2:])
    lo, hi = 0.0, MAX_RATIO
    best = _prune_copy(model, example_input, config, hi, labels)
    if _macs(best, size) > config.target_macs:
        raise DeployKitError(f"pruning {MAX_RATIO:.0%} of every prunable group still leaves "
                             f"{_macs(best, size):,} MACs > {config.target_macs:,}",
                             fix="raise target_macs, or lower round_to / the ignored layers")
    while hi - lo > 1e-3:
        mid = (lo + hi) / 2
        candidate = _prune_copy(model, example_input, config, mid, labels)
        if _macs(candidate, size) <= config.target_macs:
            hi, best = mid, candidate
        else:
            lo = mid
    return best


def _macs(model: nn.Module, size: tuple[int, int]) -> int:
    from deploykit.profile.cost import count_cost  # a static count (shapes only), the one MAC definition we use

    return count_cost(model, size).macs


def _prune_copy(model: nn.Module, example_input: torch.Tensor, config: PruneConfig, ratio: float,
                labels) -> nn.Module:
    work = copy.deepcopy(model).eval()
    apply_plan(work, plan_pruning(work, example_input, config, ratio, labels))
    return work.eval()


@dataclass
class PlannedGroup:
    """One coupled group: the root layer, its pruning function, and the channel indices to remove."""

    root: nn.Module
    handler: object
    channels: int
    remove: list[int]


def dependency_graph(model: nn.Module, example_input: torch.Tensor):
    tp = import_backend("torch_pruning", "prune", package="torch-pruning")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its tracing notices (unwrapped parameters, ...) are noise here
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_input)


def plan_pruning(model: nn.Module, example_input: torch.Tensor, config: PruneConfig, ratio: float,
                 labels=None) -> tuple[object, list[PlannedGroup]]:
    """(dependency graph, groups with the channels to remove). Modifies nothing but gradients."""
    graph = dependency_graph(model, example_input)
    if config.importance == "taylor":
        _taylor_gradients(model, example_input, labels)
    score = _importance(config.importance)
    plan = []
    for group in graph.get_all_groups(ignored_layers=_fixed_layers(model, graph, config),
                                      root_module_types=[nn.Conv2d, nn.Linear]):
        root, handler = group[0].dep.target.module, group[0].dep.handler
        channels = graph.get_out_channels(root)
        keep = kept_channels(channels, ratio, config.round_to)
        if keep < channels:
            imp = score(group)
            if imp is None or len(imp) != channels:
                continue  # a group Torch-Pruning cannot score (e.g. no weights): leave it whole
            plan.append(PlannedGroup(root, handler, channels, _lowest(imp, channels - keep)))
    model.zero_grad(set_to_none=True)
    return graph, plan


def apply_plan(model: nn.Module, planned: tuple[object, list[PlannedGroup]]) -> None:
    graph, plan = planned
    for item in plan:
        group = graph.get_pruning_group(item.root, item.handler, item.remove)
        if graph.check_pruning_group(group):
            group.prune()


def kept_channels(channels: int, ratio: float, round_to: int) -> int:
    """(1 - ratio) x channels, rounded to the nearest multiple of `round_to`, at least `round_to`; a group
    of `round_to` channels or fewer, or one not a multiple of it, is rounded within its own size."""
    if channels <= round_to:
        return channels
    keep = round_to * round(channels * (1.0 - ratio) / round_to)
    return min(channels, max(round_to, keep))


def _lowest(importance: torch.Tensor, n: int) -> list[int]:
    """Indices of the `n` least important channels (stable: ties go to the lower index), sorted."""
    order = torch.sort(importance.detach().double().cpu(), stable=True).indices
    return sorted(int(i) for i in order[:n])


def _importance(kind: str):
    tp = import_backend("torch_pruning", "prune", package="torch-pruning")
    if kind == "bn_scale":
        return tp.importance.BNScaleImportance(normalizer=None)
    if kind == "taylor":
        return tp.importance.GroupTaylorImportance(normalizer=None)
    return tp.importance.GroupMagnitudeImportance(p=1 if kind == "l1" else 2, normalizer=None)


def _taylor_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model.eval()(images), labels).backward()


def _fixed_layers(model: nn.Module, graph, config: PruneConfig) -> list[nn.Module]:
    """Layers whose output channels must stay: classifiers, ignored names, declared stream producers,
    grouped convs and the layers feeding them."""
    fixed = [m for m in model.modules() if isinstance(m, nn.Linear)]
    fixed += [m for name, m in model.named_modules() if _ignored(name, config.ignore)]
    for module in model.modules():
        declare = getattr(module, "prune_fixed_layers", None)
        if callable(declare):
            fixed += list(declare())
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels):
        fixed.append(conv)
        feeding = graph.get_pruning_group(conv, graph.get_pruner_of_module(conv).prune_in_channels, [0])
        fixed += [dep.target.module for dep, _ in feeding if graph.is_out_channel_pruning_fn(dep.handler)]
    return fixed


def _ignored(name: str, ignore: tuple[str, ...]) -> bool:
    return bool(name) and any(name == prefix or name.startswith(prefix + ".") for prefix in ignore)


def _first_conv(model: nn.Module) -> nn.Conv2d:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise DeployKitError("channel pruning needs a conv net", fix="prune a model with Conv2d layers")
    return conv
