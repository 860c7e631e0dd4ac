"""A frozen BatchNorm2d with torchvision's interface (buffers weight, bias, running_mean, running_var; a
checkpoint's num_batches_tracked ignored), written for this stand-in: y = x * g / sqrt(v + eps) + (b - m * g / sqrt(v + eps))."""

import torch


class FrozenBatchNorm2d(torch.nn.Module):
    """Per-channel affine normalisation whose statistics and parameters are buffers, never trained."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        for name, fill in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((num_features,), fill))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(f"{prefix}num_batches_tracked", None)  # saved by BatchNorm2d, meaningless when frozen
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}"
