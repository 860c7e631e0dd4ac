"""What the reparameterize pass did: each folded block with its branches and its checked error, and each
structure it left alone with the reason. Plain data: the manifest stores `to_dict()`, the CLI prints it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn

from deploykit.passes.fold import ChannelScale


@dataclass(frozen=True)
class FoldedBlock:
    where: str  # module path of the block ("(model)" for the top level)
    branches: tuple[str, ...]  # branch kinds: conv3x3+bn, conv1x1+bn, conv1x3, bn, identity, scale
    kernel: tuple[int, ...]  # () for a Linear
    max_rel_err: float | None  # block output before vs after on the probe; None when not probed
    via: str  # "graph" (found in the traced graph), "protocol" (its reparam_branches) or "own-method"


@dataclass(frozen=True)
class LeftAlone:
    where: str
    op: str  # add, cat, mul, batchnorm, protocol
    reason: str
    unfolded: bool = True  # a multi-branch sum or a norm that stays in the deployed model; False: a
    # structure that is not a linear block by nature (a residual around a non-linearity, a concat, a gate)


@dataclass
class ReparamReport:
    blocks: list[FoldedBlock] = field(default_factory=list)
    left: list[LeftAlone] = field(default_factory=list)
    conv_bn_folded: int = 0  # Conv/Linear -> BatchNorm pairs outside blocks
    traced_separately: list[str] = field(default_factory=list)  # modules fx could not trace as a whole

    @property
    def unfolded(self) -> list[LeftAlone]:
        """What the deployed model still computes in training form: unfolded sums and norms."""
        return [x for x in self.left if x.unfolded]

    @property
    def max_rel_err(self) -> float | None:
        errors = [b.max_rel_err for b in self.blocks if b.max_rel_err is not None]
        return max(errors) if errors else None

    def to_dict(self) -> dict:
        return {"blocks_folded": len(self.blocks), "conv_bn_folded": self.conv_bn_folded,
                "max_block_rel_err": self.max_rel_err, "blocks": [asdict(b) for b in self.blocks],
                "left": [asdict(x) for x in self.left], "traced_separately": list(self.traced_separately),
                "unfolded": unfolded_summary(self.unfolded)}


def unfolded_summary(unfolded: list[LeftAlone]) -> dict:
    """Counts of unfolded sums and norms, with the first few places and their reasons (manifest, CLI)."""
    sums = [x for x in unfolded if x.op != "batchnorm"]
    norms = [x for x in unfolded if x.op == "batchnorm"]
    return {"sums": len(sums), "norms": len(norms),
            "first": [{"where": x.where, "op": x.op, "reason": x.reason} for x in unfolded[:5]]}


def branch_kind(branch: nn.Module) -> str:
    """The report's name for a branch module (as merge_branches reads it)."""
    if isinstance(branch, nn.Identity):
        return "identity"
    if isinstance(branch, ChannelScale):
        return "scale"
    if isinstance(branch, nn.modules.batchnorm._BatchNorm):
        return "bn"
    linears = [type(m).__name__ for m in branch.modules() if isinstance(m, nn.Linear)]
    if linears:
        return "+".join("bn" if isinstance(m, nn.modules.batchnorm._BatchNorm) else "linear"
                        for m in (branch.children() if isinstance(branch, nn.Sequential) else [branch]))
    convs = [m for m in branch.modules() if isinstance(m, nn.Conv2d)]
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in branch.modules())
    if len(convs) != 1:
        return type(branch).__name__
    return f"conv{convs[0].kernel_size[0]}x{convs[0].kernel_size[1]}" + ("+bn" if has_bn else "")


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path and name else path or name


def where(path: str) -> str:
    return path or "(model)"
