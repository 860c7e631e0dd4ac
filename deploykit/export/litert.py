"""PyTorch -> `.tflite` through litert-torch (torch.export, then LiteRT's MLIR converter), and the file's
operators counted from its flatbuffer. An op the converter has no lowering for stops the export naming the
op and the layer that calls it (`export.torch_graph.unconvertible`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from deploykit.core.errors import import_backend
from deploykit.export.torch_graph import unconvertible


def import_litert_torch():
    return import_backend("litert_torch", "litert", package="litert-torch")


def convert_tflite(model: torch.nn.Module, probe: torch.Tensor, path: Path, quantizer=None, *,
                   fp16_weights: bool = False) -> None:
    """Write `model` as a `.tflite` for the probe's shape. A PT2E-converted GraphModule comes with the
    quantizer that annotated it: the converter then fuses its Q/DQ pairs into int8 kernels (without it, it
    keeps float kernels between QUANTIZE/DEQUANTIZE ops). `fp16_weights`: TFLite's float16 post-training
    quantization (weights stored fp16 behind DEQUANTIZE ops: half the file; a GPU delegate or an fp16-capable
    ARM CPU computes in fp16, other CPUs dequantize once and compute in fp32)."""
    litert_torch = import_litert_torch()
    config = None
    if quantizer is not None:
        from litert_torch.quantize.quant_config import QuantConfig

        config = QuantConfig(pt2e_quantizer=quantizer)
    elif fp16_weights:  # litert-torch's only fp16 route is this recipe of its generative API; it fits any model
        from litert_torch.generative.quantize.quant_recipes import full_fp16_recipe

        config = full_fp16_recipe()
    with _quiet(litert_torch.config):
        try:
            converted = litert_torch.convert(model, (probe,), quant_config=config)
        except Exception as exc:  # noqa: BLE001 - the converter raises RuntimeError, MLIR and lowering errors
            raise unconvertible(model, probe, exc, "LiteRT") from exc
        converted.export(str(path))


@contextlib.contextmanager
def _quiet(config):
    """litert-torch prints a progress line per step unless its (environment-backed) switch is off: off for
    the call, restored after, so deploykit's own progress is the only one the user sees."""
    shown = config.show_progress
    config.show_progress = False
    try:
        yield
    finally:
        config.show_progress = shown


def pt2e_quantizer(per_channel: bool):
    """litert-torch's PT2E quantizer: int8 symmetric weights, int8 activations (histogram observer),
    a ReLU6 fused into the conv before it (`pt2e.fusing_clamps`)."""
    import_litert_torch()
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    from deploykit.export.pt2e import fusing_clamps

    return fusing_clamps(PT2EQuantizer)().set_global(get_symmetric_quantization_config(is_per_channel=per_channel))
