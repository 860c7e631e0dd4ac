"""Static cost of a model: parameters, MACs and memory-access cost, in total and per layer.

What counts (the papers' definitions, nothing added):
- MACs (multiply-accumulates) of convolutions and linear layers only. Conv: h_out·w_out·k_h·k_w·c_in·c_out/g;
  Linear: in·out. Biases add nothing.
- Memory-access cost as VoVNet (Lee et al. 2019, eq. 1) and ShuffleNetV2 (Ma et al. 2018, G1) define it,
  in elements, not bytes: per conv h_out·w_out·(c_in + c_out) + k_h·k_w·c_in·c_out/g (the input and output
  feature maps plus the weights); per linear (in + out) + in·out. The papers' formula has one h·w (they
  reason about stride-1 layers); we take the output's, so a strided conv's input reads are understated.
  Biases are not counted.
- Elementwise ops (BN, activations, additions, concatenations, pooling, padding) are not part of the papers'
  definitions and are not counted, although on a device they do cost time and memory traffic.
- params counts every parameter of the model as given (BN weights too, if BN is still there). Pass the
  deploy form (`pipeline.zoo_cost.deploy_cost` for a zoo model) for the figures of what ships.

Shapes come from forward hooks on one batch-1 forward pass of zeros. This module knows modules, not the
zoo: a zoo model's deploy form (zoo + passes) is costed one layer up, in `pipeline/zoo_cost.py`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Iterator

import torch
from torch import nn

from deploykit.core.errors import DeployKitError

# Conv3d and Conv1d follow the same formulas over their spatial dims; transposed convs (a different MAC
# formula) are not counted.
COUNTED_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class LayerCost:
    """One call of one conv or linear layer, at batch size 1."""

    name: str
    type: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    kernel: tuple[int, ...] | None  # None for linear layers
    groups: int
    params: int  # counted on the module's first call only, so the column sums to the model's weights
    macs: int
    memory_access: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CostReport:
    """Totals at batch size 1; `layers` holds the per-layer rows whose MACs and memory access sum to them."""

    input_shape: tuple[int, ...]
    params: int
    macs: int
    memory_access: int
    layers: tuple[LayerCost, ...]

    def to_dict(self, *, with_layers: bool = False) -> dict:
        out = {"input_shape": self.input_shape, "params": self.params, "macs": self.macs,
               "memory_access": self.memory_access}
        if with_layers:
            out["layers"] = [layer.to_dict() for layer in self.layers]
        return out


def count_cost(model: nn.Module, input_size: int | tuple[int, int]) -> CostReport:
    """Params, MACs and memory-access cost of `model` on one (1, C, H, W) image, C from the first Conv2d.

    Only convolutions (Conv1d/2d/3d) and Linear layers count towards MACs and memory access; elementwise ops
    are not part of the papers' definitions (see the module docstring). The model is run once in eval mode
    (so BN statistics are not updated), then every module's mode is restored.
    """
    conv = first_conv(model)
    height, width = _height_width(input_size)
    probe = torch.zeros(1, conv.in_channels, height, width, dtype=conv.weight.dtype, device=conv.weight.device)
    layers = _trace_layers(model, probe)
    return CostReport(input_shape=tuple(probe.shape), params=count_params(model),
                      macs=sum(layer.macs for layer in layers),
                      memory_access=sum(layer.memory_access for layer in layers), layers=tuple(layers))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def first_conv(model: nn.Module) -> nn.Conv2d:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise DeployKitError(f"{type(model).__name__} has no convolution, so its input channels are unknown",
                             fix="the cost model needs a conv net taking (N, C, H, W) images")
    return conv


def _height_width(input_size: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if height <= 0 or width <= 0:
        raise DeployKitError(f"input size {input_size!r} is not positive", fix="pass e.g. 224 or (224, 224)")
    return height, width


def _trace_layers(model: nn.Module, probe: torch.Tensor) -> list[LayerCost]:
    """Run `probe` through the model once, recording a LayerCost for every conv / linear call."""
    layers: list[LayerCost] = []
    seen: set[int] = set()

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            params = 0 if id(module) in seen else _own_params(module)
            seen.add(id(module))
            layers.append(layer_cost(name, module, tuple(inputs[0].shape), tuple(output.shape), params))
        return hook

    counted = [(name, m) for name, m in model.named_modules() if isinstance(m, (*COUNTED_CONVS, nn.Linear))]
    handles = [m.register_forward_hook(record(name or "(model)")) for name, m in counted]
    try:
        with _eval_mode(model), torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    return layers


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the block, then every module's own training flag back: the caller's model is untouched."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _own_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


def layer_cost(name: str, module: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
               params: int) -> LayerCost:
    """The MACs and memory access of one call of a conv or linear layer (batch 1 shapes)."""
    if isinstance(module, nn.Linear):
        return _linear_cost(name, module, in_shape, out_shape, params)
    return _conv_cost(name, module, in_shape, out_shape, params)


def _conv_cost(name: str, conv: nn.Module, in_shape: tuple, out_shape: tuple, params: int) -> LayerCost:
    out_pixels = math.prod(out_shape[2:])  # h_out·w_out
    kernel_weights = conv.out_channels * (conv.in_channels // conv.groups) * math.prod(conv.kernel_size)
    macs = out_pixels * kernel_weights
    memory = out_pixels * (conv.in_channels + conv.out_channels) + kernel_weights
    return LayerCost(name, type(conv).__name__, in_shape, out_shape, tuple(conv.kernel_size), conv.groups,
                     params, macs, memory)


def _linear_cost(name: str, linear: nn.Linear, in_shape: tuple, out_shape: tuple, params: int) -> LayerCost:
    # Usually one row (batch 1); a linear over tokens or pixels runs once per row.
    rows = math.prod(in_shape) // linear.in_features
    weights = linear.in_features * linear.out_features
    macs = rows * weights
    memory = rows * (linear.in_features + linear.out_features) + weights
    return LayerCost(name, "Linear", in_shape, out_shape, None, 1, params, macs, memory)
