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

