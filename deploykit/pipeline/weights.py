"""A zoo model with its weights, in whichever form they were saved: the zoo's loader given the reparameterize
pass's deploy form (the passes sit above the zoo, so the two meet here). Export, eval, profile, fine-tune,
pruning and sweeps all load zoo weights through this module."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from deploykit import zoo
from deploykit.passes.reparameterize import is_multibranch, reparameterize
from deploykit.zoo.structure import thin_to_checkpoint
from deploykit.zoo.weights import LoadedWeights


def deploy_form(model: nn.Module) -> nn.Module | None:
    """The structure a fused (deploy-form) checkpoint was saved from; None for a model with no multi-branch
    block, whose checkpoints have one form only."""
    return reparameterize(model) if any(is_multibranch(m) for m in model.modules()) else None


def load_weights(name: str, model: nn.Module, path: Path | None = None, *, pretrained: bool = True) -> LoadedWeights:
    """`zoo.load_weights`, also taking checkpoints saved in deploy form (they give a deploy-form model)."""
    return zoo.load_weights(name, model, path, pretrained=pretrained, deploy_form=deploy_form)


def load_model(name: str, weights: Path | None = None, *, pretrained: bool = True,
               num_classes: int | None = None) -> LoadedWeights:
    """Zoo model `name` with `weights` (thinned first to the pruned layer widths stored with them), else the
    zoo's released weights if `pretrained`, else a random init."""
    model = zoo.create(name, num_classes=num_classes)
    if weights is not None:
        thin_to_checkpoint(model, weights)
    return load_weights(name, model, weights, pretrained=pretrained)


def build_model(name: str, weights: Path | None = None, *, pretrained: bool = False,
                num_classes: int | None = None) -> nn.Module:
    """`load_model`'s model, in eval mode."""
    return load_model(name, weights, pretrained=pretrained, num_classes=num_classes).model.eval()
