"""Which layers leave the fp16 range: the float model runs over real images (or the probe) with hooks
on its conv/linear layers, and any layer whose input or output magnitude passes a margin is flagged.

fp16 tops out at 65504; an activation past it becomes inf and the whole output turns to NaN
(coremltools #2344-style mismatches). Targets that compute in fp16 keep flagged layers in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import nn

FP16_MAX = 65504.0
# Flag at half the fp16 maximum: the ops between two conv/linear layers of a deploy graph (ReLU,
# pooling, mean, at most one residual add) either keep the magnitude or add two in-range tensors,
# and two values under 32752 sum to under 65504. Only conv/linear outputs are seen by the hooks.
OVERFLOW_MARGIN = 0.5
PARAMETRIC = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)


@dataclass
class RangeScan:
    """Peak |input| and |output| of each conv/linear layer over the scanned batches."""

    source: str  # "probe" or "N calibration images from DIR"
    threshold: float = FP16_MAX * OVERFLOW_MARGIN
    peaks: dict[str, tuple[float, float]] = field(default_factory=dict)

    def flagged(self) -> dict[str, float]:
        """Layer name -> its peak magnitude, for layers past the threshold."""
        return {name: max(p) for name, p in self.peaks.items() if max(p) > self.threshold}

    def to_dict(self) -> dict:
        peak_layer = max(self.peaks, key=lambda n: max(self.peaks[n]), default=None)
        return {"source": self.source, "threshold": self.threshold,
                "max_abs_activation": max(self.peaks[peak_layer]) if peak_layer else 0.0,
                "max_layer": peak_layer, "flagged": self.flagged()}


def scan_ranges(model: nn.Module, batches: Iterable[torch.Tensor], *, source: str) -> RangeScan:
    """Run `model` (not modified) over `batches` and record each conv/linear layer's peaks."""
    scan = RangeScan(source=source)
    handles = [module.register_forward_hook(_recorder(scan, name))
               for name, module in model.named_modules() if isinstance(module, PARAMETRIC)]
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return scan


def _recorder(scan: RangeScan, name: str):
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        seen_in, seen_out = scan.peaks.get(name, (0.0, 0.0))
        scan.peaks[name] = (max(seen_in, _peak(inputs[0])), max(seen_out, _peak(output)))

    return hook


def _peak(tensor: torch.Tensor) -> float:
    # inf counts as past the range; NaN (already broken in fp32) is left to the parity check
    return float(torch.nan_to_num(tensor.detach().abs(), nan=0.0).max())
