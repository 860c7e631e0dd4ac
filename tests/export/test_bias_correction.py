"""Bias correction (the OpenVINO layout, as NNCF does): the mean shift that rounding a conv's weights to
int8 causes in each output channel is given back through the bias, so the int8 outputs' per-channel mean
matches the float model's."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from deploykit.export.onnx import export_onnx
from deploykit.export.quantize import Int8Quantizer, QuantizeConfig, prepare_for_quantization
from deploykit.export.qdq_layout import LAYOUTS
from deploykit.pipeline.targets.int8_search import run_onnx


class PositiveInputConv(nn.Module):
    """A conv reading inputs of mean ~3, with per-tensor weights whose scale one large weight sets, so the
    small ones round coarsely. 3x3 with padding on a 6x6 map: most taps read padding somewhere, so a
    correction that took the border's zeros for pixels would be wrong."""

    def __init__(self, kernel: int = 1, stride: int = 1) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(8, 8, kernel, stride=stride, padding=kernel // 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(8, 8, kernel, kernel, generator=generator) * 0.05)
            self.conv.weight[0, 0] = 4.0

    def forward(self, x):
        return self.conv(x)


@pytest.fixture(scope="module", params=[(1, 1), (3, 1), (3, 2)], ids=["1x1", "3x3-padded", "3x3-stride2"])
def conv_onnx(tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("bias")
    export_onnx(PositiveInputConv(*request.param).eval(), torch.zeros(1, 8, 6, 6), tmp / "conv.onnx")
    return prepare_for_quantization(tmp / "conv.onnx", tmp / "prepared.onnx")


def _images(n: int = 16) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [(3.0 + rng.standard_normal((1, 8, 6, 6))).astype(np.float32) for _ in range(n)]


def _mean_shift(path, reference, images) -> np.ndarray:
    logits = run_onnx(path, np.concatenate(images), threads=1)
    return np.abs((logits - reference).mean(axis=(0, 2, 3)))


def test_openvino_layout_corrects_the_mean_shift_of_weight_rounding(conv_onnx, tmp_path):
    images = _images()
    reference = run_onnx(conv_onnx, np.concatenate(images), threads=1)
    plain_layout = replace(LAYOUTS["openvino"], bias_correction=False)
    shifts = {}
    for name, layout in (("plain", plain_layout), ("corrected", LAYOUTS["openvino"])):
        quantizer = Int8Quantizer(conv_onnx, images, workdir=tmp_path / name, layout=layout)
        (tmp_path / name).mkdir()
        path = quantizer.quantize(QuantizeConfig(per_channel=False), tmp_path / name / "q.onnx")
        shifts[name] = _mean_shift(path, reference, images)
    assert shifts["plain"].max() > 0.01  # the rounding shift is there to correct
    assert shifts["corrected"].max() < 0.1 * shifts["plain"].max(), shifts  # per-channel means alone: 0.22, 0.44 on 3x3


def test_only_the_bias_moves(conv_onnx, tmp_path):
    (tmp_path / "p").mkdir()
    quantizer = Int8Quantizer(conv_onnx, _images(), workdir=tmp_path, layout=LAYOUTS["openvino"])
    corrected = onnx.load(str(quantizer.quantize(QuantizeConfig(per_channel=False), tmp_path / "c.onnx")))
    plain = onnx.load(str(Int8Quantizer(conv_onnx, _images(), workdir=tmp_path / "p",
                                        layout=replace(LAYOUTS["openvino"], bias_correction=False))
                           .quantize(QuantizeConfig(per_channel=False), tmp_path / "p.onnx")))
    differing = {a.name for a, b in zip(corrected.graph.initializer, plain.graph.initializer)
                 if onnx.numpy_helper.to_array(a).tobytes() != onnx.numpy_helper.to_array(b).tobytes()}
    assert differing and all("bias" in name for name in differing), differing
