"""Checkpoint key layouts: how the state_dict keys of published checkpoints become ours.

A zoo entry lists the layouts it loads; `deploykit.zoo.weights` tries each on the model's training form,
then on its deploy form, and takes the one under which the keys are exactly the model's. A layout is data
(a name and a key rename), so an error can say what was tried and a manifest which one matched.

MobileOne and RepVGG modules carry the reference repos' names, so the authors' checkpoints load as they
are: apple/ml-mobileone (mobileone.py) `*_unfused.pth.tar` with `stage0`..`stage4`, blocks of `rbr_conv.N`,
`rbr_scale`, `rbr_skip`, `se.reduce`/`se.expand`, `linear`, and the fused `*.pth.tar` with `reparam_conv`;
DingXiaoH/RepVGG (repvgg.py) `*-train.pth` with `rbr_dense`, `rbr_1x1`, `rbr_identity` and `*-deploy.pth`
with `rbr_reparam`. timm builds both families as a ByobNet (timm/models/byobnet.py: the names below hold
from the 2021 RepVggBlock and the 2023 MobileOneBlock to v1.0.29): `stem` for stage0, `stages.i` for
stage i+1, conv-BN branches `conv_kxk` (MobileOne: a ModuleList) with `.conv`/`.bn`, `conv_scale` /
`conv_1x1`, the BN branch `identity`, SE as `attn.fc1`/`attn.fc2`, the classifier `head.fc`, and the fused
conv `reparam_conv` for both families. Torch-free: renaming keys needs no tensors.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

Replacement = str | Callable[[re.Match], str]


def same_key(key: str) -> str:
    return key


@dataclass(frozen=True)
class Layout:
    """A checkpoint layout: its name (for errors and manifests) and the rename of one key to ours."""

    name: str
    rename: Callable[[str], str] = same_key

    def adapt(self, state: dict) -> dict:
        return {self.rename(key): value for key, value in state.items()}


def rename_rules(*rules: tuple[str, Replacement]) -> Callable[[str], str]:
    """A key rename that applies every (regex, replacement) rule in order, each at most once."""
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]

    def rename(key: str) -> str:
        for pattern, replacement in compiled:
            key = pattern.sub(replacement, key, count=1)
        return key

    return rename


OWN = Layout("deploykit")

# ByobNet's network-level names; the block-level ones differ per family.
_TIMM_NETWORK = (
    (r"^stem\.", "stage0."),
    (r"^stages\.(\d+)\.", lambda m: f"stage{int(m[1]) + 1}."),
    (r"^head\.fc\.", "linear."),
)

MOBILEONE_LAYOUTS = (
    Layout("apple/ml-mobileone (our names)"),
    Layout("timm ByobNet", rename_rules(
        *_TIMM_NETWORK,
        (r"\.conv_kxk\.", ".rbr_conv."),
        (r"\.conv_scale\.", ".rbr_scale."),
        (r"\.identity\.", ".rbr_skip."),
        (r"\.attn\.fc1\.", ".se.reduce."),
        (r"\.attn\.fc2\.", ".se.expand."),
        # `reparam_conv` is the fused conv's name in both.
    )),
)

REPVGG_LAYOUTS = (
    Layout("DingXiaoH/RepVGG (our names)"),
    Layout("timm ByobNet", rename_rules(
        *_TIMM_NETWORK,
        (r"\.conv_kxk\.", ".rbr_dense."),
        (r"\.conv_1x1\.", ".rbr_1x1."),
        (r"\.identity\.", ".rbr_identity."),
        (r"\.reparam_conv\.", ".rbr_reparam."),
    )),
)
