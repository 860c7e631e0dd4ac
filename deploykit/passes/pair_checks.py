"""Every conv/linear-BN pair checked on the probe forward as it passes: the pair's input is kept only
until its second layer has run, the folded layer is run on it and compared with what the pair computed."""

from __future__ import annotations

import torch
import torch.fx as fx

from deploykit.core.compare import Comparison, compare_outputs, tolerance_for
from deploykit.passes.fold_bn import folded_pair


class PairChecks:
    """`observe` is a Recorder observer; `verdicts[bn_node]` is True when the folded pair matched (fp32
    tolerance) and the failed Comparison otherwise."""

    def __init__(self, gm: fx.GraphModule, pairs: dict[fx.Node, tuple[fx.Node, str]]) -> None:
        self.gm, self.pairs = gm, pairs
        self.first = {(layer if where == "after" else bn): bn for bn, (layer, where) in pairs.items()}
        self.second = {(bn if where == "after" else layer): bn for bn, (layer, where) in pairs.items()}
        self.pending: dict[fx.Node, torch.Tensor] = {}
        self.verdicts: dict[fx.Node, object] = {}
        self.folded: dict[fx.Node, tuple] = {}  # BN node -> (the layer, the folded layer that was checked)

    def observe(self, node: fx.Node, args: tuple, result) -> None:
        if node in self.first and args and isinstance(args[0], torch.Tensor):
            self.pending[self.first[node]] = args[0].detach().clone()
        bn = self.second.get(node)
        if bn is not None and bn in self.pending and isinstance(result, torch.Tensor):
            self.verdicts[bn] = self._check(bn, self.pending.pop(bn), result)

    def check_now(self, bn_node: fx.Node, pair: tuple[fx.Node, str], pair_input: torch.Tensor,
                  expected: torch.Tensor):
        """A pair that did not exist during the forward (a BN after a folded block)."""
        self.pairs[bn_node] = pair
        return self._check(bn_node, pair_input, expected)

    @torch.no_grad()
    def _check(self, bn_node: fx.Node, pair_input: torch.Tensor, expected: torch.Tensor):
        layer_node, where = self.pairs[bn_node]
        layer, bn = self.gm.get_submodule(layer_node.target), self.gm.get_submodule(bn_node.target)
        folded = folded_pair(layer, bn, where)
        try:
            actual = folded(pair_input)
        except RuntimeError as exc:  # e.g. a 1-D norm over another axis than the Linear's features
            return f"the folded layer does not run on the pair's input ({exc})"
        if actual.numel() != expected.numel():
            return "the folded layer changes the output shape"
        actual = actual.reshape(expected.shape)  # a Linear reached through a reshape that merges leading dims
        if expected.is_meta:  # a shape-only build (cost counting): no values exist, the shapes matched
            self.folded[bn_node] = (layer, folded)
            return True
        scale = expected.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
        if ((actual - expected).abs().max() / scale).item() <= tolerance_for("fp32").max_rel_err:
            self.folded[bn_node] = (layer, folded)
            return True  # the full statistics only when they explain a failure
        return compare_outputs(expected.cpu().numpy(), actual.cpu().numpy(), "fp32")


def check_reason(verdict) -> str:
    """The report's reason for a pair left unfolded."""
    if isinstance(verdict, Comparison):
        return f"probe check failed: {verdict.summary()}"
    return verdict if isinstance(verdict, str) else "not reached by the probe forward"
