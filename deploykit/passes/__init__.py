"""Passes: registered pure functions `model -> new model`. None mutates its input."""

from deploykit.passes.fold_bn import FoldBNConfig, fold_bn
from deploykit.passes.registry import PASSES, register_pass
from deploykit.passes.reparameterize import ReparameterizeConfig, reparameterize

__all__ = ["PASSES", "FoldBNConfig", "ReparameterizeConfig", "fold_bn", "register_pass", "reparameterize"]
