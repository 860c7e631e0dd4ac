"""Multi-branch training blocks (RepVGG, MobileOne, ...) -> one conv each.

Protocol fast path: a block that offers `reparam_branches()` and `reparam_rebuild(conv)` is merged by
`fold.merge_branches`; the block never does the math itself. Conv->BN pairs outside such blocks are
`fold_bn`'s job, so an export runs both passes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from deploykit.passes.fold import merge_branches
from deploykit.passes.fold_bn import require_eval
from deploykit.passes.registry import register_pass


@dataclass(frozen=True)
class ReparameterizeConfig:
    """No options yet; the graph-based generic search will add some."""


def is_multibranch(module: nn.Module) -> bool:
    return callable(getattr(module, "reparam_branches", None)) and callable(getattr(module, "reparam_rebuild", None))


@register_pass("reparameterize", ReparameterizeConfig)
def reparameterize(model: nn.Module, config: ReparameterizeConfig = ReparameterizeConfig()) -> nn.Module:
    """A deploy-form copy of `model`: every multi-branch block merged into one conv. Input untouched."""
    require_eval(model, "reparameterize")
    return _merge_blocks(copy.deepcopy(model)).eval()


def _merge_blocks(module: nn.Module) -> nn.Module:
    if is_multibranch(module):
        return module.reparam_rebuild(merge_branches(list(module.reparam_branches())))
    for name, child in module.named_children():
        setattr(module, name, _merge_blocks(child))
    return module
