"""PT2E post-training quantization (torchao's prepare/convert), the int8 path both torch.export-based
targets take: the toolchain's quantizer annotates the exported graph, calibration images run through its
observers, and the converted graph carries quantize/dequantize pairs the converter lowers to int8 kernels."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch


def quantize_pt2e(model: torch.nn.Module, probe: torch.Tensor, quantizer, batches: Iterable[np.ndarray], *,
                  fold_quantize: bool):
    """The converted (int8) GraphModule of `model`, its activation ranges observed on `batches`.
    `fold_quantize`: store weights as int8 constants (ExecuTorch's partitioner needs it) or keep them float
    behind quantize ops (LiteRT's converter needs that: folded per-channel weights fail its StableHLO pass)."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    exported = torch.export.export(model, (probe,)).module()
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for batch in batches:
            prepared(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
    converted = move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=fold_quantize))
    for module in converted.modules():  # the flag converters read (litert-torch warns on a "training" model);
        module.training = False  # the exported graph itself is fixed: this changes no computation
    return converted



CLAMPS = ("aten.hardtanh.default", "aten.hardtanh_.default")  # ReLU6 and other clamps, as torch.export writes them
CONVS = ("aten.conv1d.default", "aten.conv2d.default", "aten.linear.default")


def fusing_clamps(quantizer_class: type) -> type:
    """The toolchain's PT2E quantizer, also fusing a clamp (ReLU6) into the conv or linear before it.

    Both XNNPACK quantizers (ExecuTorch's and litert-torch's) fuse only conv+ReLU: before a ReLU6 they quantize
    the conv's raw output, whose range in a BN-folded depthwise layer is tens of times the [0, 6] that follows;
    efficientnet_lite0 then reads 8.9 dB SQNR at its logits. XNNPACK runs the clamp inside the int8 conv (its
    output_min/max), so the right place for the output's quantizer is after the clamp, as ORT and TFLite do."""

    class ClampFusing(quantizer_class):
        def annotate(self, model):
            annotate_conv_clamps(model, self.global_config)  # first: the toolchain skips annotated nodes
            return super().annotate(model)

    ClampFusing.__name__ = ClampFusing.__qualname__ = f"ClampFusing{quantizer_class.__name__}"
    return ClampFusing


def annotate_conv_clamps(model: torch.fx.GraphModule, config) -> None:
    """Annotate each conv/linear -> clamp pair as one int8 op: quantized input, weight (and the config's bias
    spec), and one output quantizer after the clamp."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    for clamp in model.graph.nodes:
        conv = clamp.args[0] if _is_call(clamp, CLAMPS) else None
        if conv is None or not _is_call(conv, CONVS) or len(conv.users) > 1 or _annotated(conv, clamp):
            continue
        inputs = {conv.args[0]: config.input_activation, conv.args[1]: config.weight}
        if len(conv.args) > 2 and isinstance(conv.args[2], torch.fx.Node) and config.bias is not None:
            inputs[conv.args[2]] = config.bias
        conv.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map=inputs, _annotated=True)
        clamp.meta["quantization_annotation"] = QuantizationAnnotation(output_qspec=config.output_activation,
                                                                       _annotated=True)


def _is_call(node, targets: tuple[str, ...]) -> bool:
    return isinstance(node, torch.fx.Node) and node.op == "call_function" and str(node.target) in targets


def _annotated(*nodes) -> bool:
    return any(getattr(n.meta.get("quantization_annotation"), "_annotated", False) for n in nodes)
