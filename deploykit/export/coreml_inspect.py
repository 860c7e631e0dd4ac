"""What an .mlpackage holds, read from its spec without running it: interface, MIL ops, dtypes.

This is what can be proved about a Core ML artifact on Linux, where Core ML itself cannot run.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from deploykit.export.coreml import import_coremltools

# Ops that hold or convert data rather than compute on it; precision is judged on the rest.
_DATA_OPS = {"const", "cast"}
_WEIGHT_OPS = {"conv", "conv_transpose", "linear", "matmul"}
MIN_QUANTIZED_WEIGHT = 2048  # coremltools' default weight_threshold (see export.coreml.quantize_weights_int8)


@dataclass
class MILOp:
    type: str
    name: str
    inputs: dict[str, list[str]]  # parameter -> names of the vars bound to it
    output_types: list[str]  # MIL DataType names: FLOAT16, FLOAT32, INT8, ...
    output_size: int  # elements of the first output (for consts: the weight size)


@dataclass
class ProgramSummary:
    inputs: list[dict]
    outputs: list[dict]
    ops: list[MILOp] = field(default_factory=list)

    def histogram(self) -> dict[str, int]:
        """Op type -> count, consts left out (they are weights and op parameters, not compute)."""
        counts = Counter(op.type for op in self.ops if op.type != "const")
        return dict(counts.most_common())

    def producer(self) -> dict[str, MILOp]:
        return {op.name: op for op in self.ops}


def summarize_mlpackage(path: Path) -> ProgramSummary:
    """Load the package as a spec only (no compile, no runtime) and read its main function."""
    ct = import_coremltools()
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    if not spec.HasField("mlProgram"):
        raise ValueError(f"{path} is not an ML Program")
    main = spec.mlProgram.functions["main"]
    block = main.block_specializations[main.opset]
    return ProgramSummary(inputs=[_feature(f) for f in spec.description.input],
                          outputs=[_feature(f) for f in spec.description.output],
                          ops=[_op(o) for o in block.operations])


def _feature(feature) -> dict:
    from coremltools.proto import FeatureTypes_pb2 as ft

    kind = feature.type.WhichOneof("Type")
    if kind == "imageType":
        image = feature.type.imageType
        return {"name": feature.name, "kind": "image", "shape": [image.height, image.width],
                "color": ft.ImageFeatureType.ColorSpace.Name(image.colorSpace)}
    array = feature.type.multiArrayType
    return {"name": feature.name, "kind": "tensor", "shape": list(array.shape),
            "dtype": ft.ArrayFeatureType.ArrayDataType.Name(array.dataType).lower()}


def _op(op) -> MILOp:
    from coremltools.proto import MIL_pb2

    types = [MIL_pb2.DataType.Name(o.type.tensorType.dataType) for o in op.outputs]
    dims = op.outputs[0].type.tensorType.dimensions if op.outputs else []
    size = math.prod(d.constant.size for d in dims) if dims else 1
    inputs = {key: [a.name for a in arg.arguments if a.name] for key, arg in op.inputs.items()}
    return MILOp(op.type, op.outputs[0].name if op.outputs else "", inputs, types, size)


def check_precision(summary: ProgramSummary, requested: str, kept_fp32: dict[str, str] | None = None) -> dict:
    """fp32: no fp16 tensor anywhere. fp16: every float compute op in fp16 except those the fp16
    guard kept in fp32 (`kept_fp32`: MIL op -> torch layer): as many fp32 ops as it kept, and every
    fp32 conv/linear among them belongs to a layer it flagged. (MIL op names change after the guard
    runs, e.g. a name clashing with the input is suffixed, so ops are matched by count and by weight.)"""
    compute = [op for op in summary.ops if not _is_data(op) and _is_float(op)]
    fp16 = [op for op in compute if op.output_types[0] == "FLOAT16"]
    fp32 = [op for op in compute if op.output_types[0] == "FLOAT32"]
    if requested == "fp32":
        any_fp16 = [op.name for op in summary.ops if "FLOAT16" in op.output_types]
        return {"requested": "fp32", "fp32_ops": len(fp32), "fp16_tensors": len(any_fp16), "passed": not any_fp16}
    kept = kept_fp32 or {}
    weights = tuple(_sanitize(f"{layer}.weight") for layer in kept.values())
    stray = [op.name for op in fp32 if op.inputs.get("weight")
             and not any(_sanitize(op.inputs["weight"][0]).startswith(w) for w in weights)]
    return {"requested": "fp16", "fp16_ops": len(fp16), "fp32_ops": len(fp32), "kept_fp32_by_guard": len(kept),
            "unexpected_fp32": stray[:10], "passed": bool(fp16) and not stray and len(fp32) == len(kept)}


def check_weight_quantization(summary: ProgramSummary) -> dict:
    """Every conv/linear weight of at least MIN_QUANTIZED_WEIGHT elements comes from an int8
    dequantizing constexpr op; smaller ones are left float by design."""
    producers = summary.producer()
    quantized, small_float, large_float = 0, 0, []
    for op in summary.ops:
        if op.type not in _WEIGHT_OPS or not op.inputs.get("weight"):
            continue
        source = producers.get(op.inputs["weight"][0])
        if source is not None and source.type.startswith("constexpr_"):
            quantized += 1
        elif source is not None and source.output_size < MIN_QUANTIZED_WEIGHT:
            small_float += 1
        else:
            large_float.append(op.name)
    dequant = sorted({op.type for op in summary.ops if op.type.startswith("constexpr_")})
    return {"int8_weights": quantized, "float_weights_below_threshold": small_float,
            "float_weights_above_threshold": large_float[:10], "dequantize_ops": dequant,
            "passed": quantized > 0 and not large_float}


def _is_data(op: MILOp) -> bool:
    """Ops that are not the network's compute: weights decoded at load (constexpr_*), and the
    ImageType's pixel scale/bias, which coremltools adds in fp32 on purpose (pixels reach 255)."""
    return (op.type in _DATA_OPS or op.type.startswith("constexpr_")
            or op.name.endswith(("__scaled__", "__biased__")))


def _is_float(op: MILOp) -> bool:
    return bool(op.output_types) and op.output_types[0] in ("FLOAT16", "FLOAT32")


def _sanitize(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z]", "_", name)
