"""Are a folded model's weights ready for per-tensor int8? Per output channel, the range max|w|.

Folding BN (and, for RepVGG/MobileOne, merging branches) scales every output channel by its own
gamma / sigma, so channel ranges can differ by orders of magnitude: with one scale per tensor the
widest channel sets the step and the narrow ones keep a handful of levels (RepVGG-A0 drops from 72.4 to
52.2 % top-1 with standard int8 PTQ, QARepVGG paper). The spread max range / median range says how many
levels the typical channel keeps: 127 / spread. Per-channel scales are immune; per-tensor is flagged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

SPREAD_LIMIT = 8.0  # the median channel keeps under 16 of 127 levels (4 bits) beyond this
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm")


@dataclass(frozen=True)
class LayerSpread:
    node: str
    layer: str  # the module path its weight came from, when known
    op_type: str
    channels: int
    spread: float  # max channel range / median channel range (inf if the median channel is all zero)
    levels_median_channel: float  # of 127, with one per-tensor scale


@dataclass
class Readiness:
    layers: list[LayerSpread]
    limit: float = SPREAD_LIMIT
    unsafe: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.unsafe = [layer.node for layer in self.layers if layer.spread > self.limit]

    @property
    def per_tensor_safe(self) -> bool:
        return not self.unsafe

    def to_dict(self, worst: int = 10) -> dict:
        ranked = sorted(self.layers, key=lambda layer: layer.spread, reverse=True)
        return {"per_tensor_safe": self.per_tensor_safe, "spread_limit": self.limit,
                "layers_checked": len(self.layers), "unsafe_layers": len(self.unsafe),
                "max_spread": ranked[0].spread if ranked else None,
                "worst": [_rounded(asdict(layer)) for layer in ranked[:worst]]}

    def summary(self) -> str:
        if self.per_tensor_safe:
            return f"per-tensor int8 weights look safe (channel range spread ≤ {self.limit:g} in all layers)"
        worst = max(self.layers, key=lambda layer: layer.spread)
        return (f"per-tensor int8 weights are unsafe in {len(self.unsafe)} of {len(self.layers)} layers "
                f"(worst {worst.layer}: channel ranges spread {worst.spread:.0f}x, its median channel would keep "
                f"{worst.levels_median_channel:.0f} of 127 levels)")


def check_weight_ranges(model, limit: float = SPREAD_LIMIT) -> Readiness:
    """Spread of every weighted node in an ONNX model (folded: weights are initializers)."""
    from onnx import numpy_helper

    weights = {init.name: init for init in model.graph.initializer}
    names = layer_names(model)
    layers = []
    for node in model.graph.node:
        if node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in weights:
            w = numpy_helper.to_array(weights[node.input[1]])
            layers.append(_spread(node, names[node.name], _per_output_channel(w, node)))
    return Readiness(layers, limit)


def _per_output_channel(w: np.ndarray, node) -> np.ndarray:
    """max|w| per output channel: axis 0 for Conv (O, I, kh, kw) and Gemm with transB, else axis 1."""
    axis = 0
    if node.op_type == "Gemm" and not any(a.name == "transB" and a.i for a in node.attribute):
        axis = 1
    if node.op_type == "ConvTranspose":
        axis = 1
    moved = np.moveaxis(np.abs(w.astype(np.float64)), axis, 0)
    return moved.reshape(len(moved), -1).max(axis=1)


def _spread(node, layer: str, ranges: np.ndarray) -> LayerSpread:
    widest, median = float(ranges.max()), float(np.median(ranges))
    spread = widest / median if median > 0 else (float("inf") if widest > 0 else 1.0)
    return LayerSpread(node.name, layer, node.op_type, len(ranges), spread, 127.0 / spread)


def _rounded(d: dict) -> dict:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}


def layer_names(model) -> dict[str, str]:
    """ONNX node name -> the module path its weight came from ('layer2.0.conv1' for '/conv1_3/Conv'),
    which is what a user recognises; nodes without a named weight keep their node name."""
    weights = {init.name for init in model.graph.initializer}
    names = {}
    for node in model.graph.node:
        weight = node.input[1] if len(node.input) > 1 else ""
        names[node.name] = weight[:-len(".weight")] if weight in weights and weight.endswith(".weight") else node.name
    return names
