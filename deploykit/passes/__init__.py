"""Passes: registered pure functions `model -> new model`. None mutates its input. Each is registered under
the name of its public function here (the registry imports its own members: `registry.PASS_MODULES`)."""

from deploykit.passes.fold_bn import FoldBNConfig, fold_bn
from deploykit.passes.prune import PruneConfig, prune_channels
from deploykit.passes.registry import PASSES, PassResult, register_pass
from deploykit.passes.reparam_report import ReparamReport
from deploykit.passes.reparameterize import ReparameterizeConfig, reparameterize, reparameterize_with_report

__all__ = ["PASSES", "FoldBNConfig", "PassResult", "PruneConfig", "ReparamReport", "ReparameterizeConfig", "fold_bn",
           "prune_channels", "register_pass", "reparameterize", "reparameterize_with_report"]
