"""Passes: registered pure functions `model -> new model`. None mutates its input."""

from deploykit.passes.fold_bn import FoldBNConfig, fold_bn
from deploykit.passes.registry import PASSES, PassResult, register_pass
from deploykit.passes.reparam_report import ReparamReport
from deploykit.passes.reparameterize import ReparameterizeConfig, reparameterize, reparameterize_with_report

__all__ = ["PASSES", "FoldBNConfig", "PassResult", "ReparamReport", "ReparameterizeConfig", "fold_bn",
           "register_pass", "reparameterize", "reparameterize_with_report"]
