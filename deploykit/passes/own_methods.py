"""A model's own fold method (`fuse()`, `reparameterize()`, `switch_to_deploy()`, timm's names) as a
fallback: only for a block that the generic path left unfolded, and checked on the block's captured
input like every other fold. The generic path comes first because it is one implementation checked
everywhere; an own method is code deploykit has not read (timm writes the fold math again per model)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from deploykit.passes.reparam_report import FoldedBlock, LeftAlone, where

OWN_METHODS = ("fuse", "reparameterize", "switch_to_deploy")  # timm's reparameterize_model's order


def own_method(module: nn.Module) -> str | None:
    """The name of the fold method `module` offers, if any."""
    return next((name for name in OWN_METHODS if callable(getattr(module, name, None))), None)


def blocks_to_refold(model: nn.Module, unfolded: list[LeftAlone]) -> dict[str, nn.Module]:
    """For each unfolded place, the innermost module around it that has its own fold method (outermost
    wins when two such modules nest, so that no block is folded twice)."""
    offering = {name: m for name, m in model.named_modules() if own_method(m) is not None}
    chosen: dict[str, nn.Module] = {}
    for item in unfolded:
        place = "" if item.where == "(model)" else item.where
        around = [name for name in offering if not name or place == name or place.startswith(f"{name}.")]
        if around:
            inner = max(around, key=len)
            chosen[inner] = offering[inner]
    return {name: m for name, m in chosen.items()
            if not any(other != name and (not other or name.startswith(f"{other}.")) for other in chosen)}


@torch.no_grad()
def apply_own_method(block: nn.Module) -> nn.Module:
    """The block after its own method: `fuse()` returns the new module, the others change it in place."""
    name = own_method(block)
    result = getattr(block, name)()
    return result if name == "fuse" and isinstance(result, nn.Module) else block


def refold_block(block: nn.Module, io: tuple | None, name: str, check) -> tuple[nn.Module | None, object]:
    """(the folded block, its FoldedBlock) or (None, the LeftAlone saying why not)."""
    method = own_method(block)
    try:
        folded = apply_own_method(copy.deepcopy(block)).eval()  # in place: never on the original
    except Exception as exc:  # noqa: BLE001 - the model's own code: report its failure, keep the block
        return None, LeftAlone(where(name), "own-method", f"{method}() raised {type(exc).__name__}: {exc}",
                               unfolded=False)  # the place itself is reported by the generic path
    verdict = None if io is None else check(folded, *io)
    if verdict is not None and not verdict:
        return None, LeftAlone(where(name), "own-method", f"{method}() changed the block's output: "
                                                           f"{verdict.summary()}", unfolded=False)
    convs = [m for m in folded.modules() if isinstance(m, nn.Conv2d)]
    kernel = tuple(convs[0].kernel_size) if len(convs) == 1 else ()
    error = None if verdict is None else verdict.max_rel_err
    return folded, FoldedBlock(where(name), (f"{method}()",), kernel, error, "own-method")


def without_own_methods(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy whose modules no longer offer an own fold method (each set to None on the instance), and
    how many modules offered one: what "only the generic path can fold" means in comparisons."""
    model = copy.deepcopy(model)
    offering = 0
    for module in model.modules():
        names = [name for name in OWN_METHODS if callable(getattr(module, name, None))]
        for name in names:
            setattr(module, name, None)
        offering += bool(names)
    return model, offering
