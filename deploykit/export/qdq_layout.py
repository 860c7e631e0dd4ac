"""Where Q/DQ pairs go and in which int8 type, per runtime: the layout each runtime runs fastest.

One QDQ file format (QuantizeLinear/DequantizeLinear, read by ONNX Runtime, OpenVINO and TensorRT), but
each runtime's int8 kernels match different patterns (measured here: BENCHMARKS.md, "int8-layouts"):

- ONNX Runtime (CPU) fuses DQ -> Conv -> Q into QLinearConv only when the conv's *output* is quantized, and
  folds a ReLU into that Q only when the zero point is the type's minimum; its x86 kernels take u8
  activations x s8 weights (VPMADDUBSW / VNNI). So: u8 asymmetric activations, Q/DQ on op outputs as
  well (ReLU/Clip absorbed), s8 symmetric weights. Symmetric s8 activations with input-only placement
  (the TensorRT layout) leave every conv in fp32 between Q/DQ pairs there: 1.5-2.6x *slower* than float.
  ARM64 was not measured here; ONNX Runtime's ARM64 kernels also take u8 x s8 (and have a symmetric s8
  path), so the same layout is the default there until a measurement says otherwise.
- OpenVINO's CPU plugin runs all of these in int8, fastest with NNCF's placement (OpenVINO's own
  quantizer): Q/DQ on op inputs only, u8 with zero point 0 for tensors that are never negative (after
  ReLU/ReLU6), symmetric s8 for the others (its kernels take u8/s8 x s8 without zero-point terms). The
  ONNX Runtime layout's asymmetric activations cost OpenVINO zero-point compensation (EfficientNet-Lite0:
  ~10 % slower than this layout, measured). NNCF also corrects conv biases for the mean shift weight
  rounding causes (export.bias_correction); both this layout and the ONNX Runtime one do, where the held-out
  images do not score it worse (the search scores its plain candidate both ways first). Measured on 10,000
  images, ONNX Runtime layout: resnet56_cifar 83.06 -> 83.12 % with it; repvgg_a0_cifar 83.65 -> 80.93 %, which
  the held-out images catch (5-6 points lost there), so that export leaves biases alone. (ONNX Runtime's *s8 asymmetric* activations are the one
  variant OpenVINO computed wrongly here: 59 % top-1 instead of 83 % on resnet56_cifar; no layout uses them.)
- TensorRT accepts only symmetric s8 (zero point 0) and wants Q/DQ on op inputs only (its own fusion
  rules place the output quantization), in a strongly typed network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

RUNTIME_LAYOUTS = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}
DEFAULT_LAYOUT = "onnxruntime"


@dataclass(frozen=True)
class QdqLayout:
    name: str
    activations: str  # "u8" or "s8"
    activation_symmetric: bool
    quantize_outputs: bool  # Q/DQ on op outputs too (else on op inputs only)
    runtimes: tuple[str, ...]  # the runtimes this layout is made for
    summary: str
    unsigned_when_non_negative: bool = False  # tensors never below 0 in calibration: u8, zero point 0
    bias_correction: bool = False  # conv biases absorb weight rounding's mean shift (export.bias_correction)

    def quantizer_arguments(self, ranges=None) -> dict:
        """The `quantize_static` arguments that produce this layout (weights: s8 symmetric always).
        `ranges` (minmax TensorsData) tells which tensors are never negative, where the layout asks."""
        from onnxruntime.quantization import QuantType
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        extra = {"ActivationSymmetric": self.activation_symmetric, "WeightSymmetric": True}
        if not self.quantize_outputs:
            extra["OpTypesToExcludeOutputQuantization"] = sorted(set(QDQRegistry) | set(QLinearOpsRegistry))
        if self.unsigned_when_non_negative and ranges is not None:
            extra["TensorQuantOverrides"] = {name: [{"quant_type": QuantType.QUInt8, "symmetric": False}]
                                             for name in non_negative(ranges)}
        activation = QuantType.QUInt8 if self.activations == "u8" else QuantType.QInt8
        return {"activation_type": activation, "weight_type": QuantType.QInt8, "extra_options": extra}

    def to_dict(self) -> dict:
        return asdict(self)


LAYOUTS = {
    "onnxruntime": QdqLayout(
        "onnxruntime", "u8", False, True, ("onnxruntime", "openvino"),
        "u8 asymmetric activations, s8 symmetric weights, Q/DQ on op inputs and outputs (fuses into "
        "QLinearConv/QLinearAdd; ReLU absorbed), biases corrected for weight rounding where the held-out images "
        "agree", bias_correction=True),
    "openvino": QdqLayout(
        "openvino", "s8", True, False, ("openvino",),
        "NNCF's placement: Q/DQ on op inputs only, u8 (zero point 0) for never-negative tensors, symmetric s8 "
        "for the others, s8 symmetric weights, biases corrected for weight rounding (NNCF's default)",
        unsigned_when_non_negative=True, bias_correction=True),
    "tensorrt": QdqLayout(
        "tensorrt", "s8", True, False, ("tensorrt",),
        "s8 symmetric activations and weights (zero point 0), Q/DQ on op inputs only (TensorRT's "
        "requirement for strongly typed int8)"),
}


def layout_for_runtime(runtime: str) -> QdqLayout | None:
    """The layout made for `runtime`, or None when it runs no QDQ ONNX (Core ML, torch)."""
    name = RUNTIME_LAYOUTS.get(runtime)
    return None if name is None else LAYOUTS[name]


def non_negative(ranges) -> list[str]:
    """Tensors whose calibrated minimum is not below zero (post-ReLU/ReLU6 activations)."""
    import numpy as np

    return sorted(name for name, data in ranges.data.items() if float(np.min(data.range_value[0])) >= 0.0)
