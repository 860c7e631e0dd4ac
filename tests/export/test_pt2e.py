"""PT2E int8 for the XNNPACK targets: a conv followed by ReLU6 is quantized as one int8 op (the output
quantizer after the clamp), not with its raw, wide pre-clamp range as both toolchains' own quantizers do."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from deploykit.export.pt2e import quantize_pt2e

TOOLCHAINS = {"executorch": "executorch", "litert": "litert_torch"}


def _toolchain(name: str):
    missing = importlib.util.find_spec(TOOLCHAINS[name]) is None
    return pytest.param(name, marks=pytest.mark.skipif(
        missing, reason=f'{TOOLCHAINS[name]} is optional: pip install "deploykit[{name}]"'))


class WideConvReLU6(torch.nn.Module):
    """A BN-folded depthwise-like layer: pre-activations spread over about +-300, ReLU6 keeps [0, 6]."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator) * 40)
            self.conv.bias.copy_(torch.randn(8, generator=generator) * 5)
        self.act = torch.nn.ReLU6()

    def forward(self, x):
        return self.act(self.conv(x))


def _quantizers(name: str):
    """(ours, the toolchain's plain one), both per-channel symmetric."""
    if name == "executorch":
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer as Plain,
                                                                             get_symmetric_quantization_config)
        from deploykit.export.executorch import pt2e_quantizer
    else:
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer as Plain, get_symmetric_quantization_config
        from deploykit.export.litert import pt2e_quantizer
    return pt2e_quantizer(True), Plain().set_global(get_symmetric_quantization_config(is_per_channel=True))


def _sqnr_db(model, quantizer, images) -> float:
    converted = quantize_pt2e(model, images[:1], quantizer, [b.numpy() for b in images.split(1)], fold_quantize=False)
    with torch.no_grad():  # the exported program has the probe's static batch of 1
        reference, quantized = model(images), torch.cat([converted(image) for image in images.split(1)])
    noise = ((reference - quantized) ** 2).mean()
    return float(10 * np.log10((reference ** 2).mean() / noise))


@pytest.mark.parametrize("toolchain", [_toolchain("executorch"), _toolchain("litert")])
def test_conv_relu6_is_quantized_after_the_clamp(toolchain):
    model = WideConvReLU6().eval()
    images = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ours, plain = _quantizers(toolchain)
    fused_db, plain_db = _sqnr_db(model, ours, images), _sqnr_db(model, plain, images)
    assert fused_db > 28, f"conv+ReLU6 int8 reads {fused_db:.1f} dB"
    assert fused_db > plain_db + 10, (fused_db, plain_db)  # the toolchain's gap this works around is real
