"""PyTorch -> Core ML ML Program (.mlpackage). The only module that calls coremltools' converter.

We convert a TorchScript trace, coremltools' most mature frontend: its MIL ops keep the traced
parameter names (`stage0.conv.weight`), which is how the fp16 guard finds a layer's ops. Conversion
runs on any OS; running the result needs macOS (see runtimes/coreml.py).
"""

from __future__ import annotations

import copy
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deploykit.core.errors import DeployKitError, import_backend
from deploykit.core.preprocess import Preprocess

COMPUTE_UNITS = ("all", "cpu_and_ne", "cpu_and_gpu", "cpu_only")
INPUT_NAME, OUTPUT_NAME = "input", "logits"  # the names the ONNX target uses too


@dataclass(frozen=True)
class CoreMLConfig:
    precision: str = "fp16"  # compute precision of the ML Program: fp16 or fp32
    compute_units: str = "all"
    image: "ImageInput | None" = None  # bake preprocessing into an ImageType input
    weights_int8: bool = False  # weight-only linear int8 (activations stay in `precision`)
    keep_fp32: dict[str, bool] = field(default_factory=dict)  # layer -> its output is large (fp16 guard)
    deployment_target: str = "iOS16"  # iOS16: ML Program with fp16 I/O types and constexpr int8 weights


@dataclass(frozen=True)
class ImageInput:
    """Core ML's image preprocessing: y = scale * pixel + bias[c], one scale for all channels."""

    scale: float
    bias: tuple[float, ...]
    color_layout: str  # "RGB", "BGR" or "G"


@dataclass
class CoreMLConversion:
    mlmodel: object  # coremltools.models.MLModel
    kept_fp32: dict[str, str] = field(default_factory=dict)  # MIL op name -> torch layer
    warnings: list[str] = field(default_factory=list)


def _drop_native_proxy_notices(record: logging.LogRecord) -> bool:
    # Off macOS coremltools logs one "Failed to load _ML...Proxy" warning per native class at import: the
    # predict-side library exists only on macOS, which deploykit already says where it matters.
    return not record.getMessage().startswith("Failed to load _ML")


def import_coremltools():
    from deploykit.export.coreml_compat import drop_untested_version_notice

    logging.getLogger("coremltools").addFilter(_drop_native_proxy_notices)
    logging.getLogger("coremltools").addFilter(drop_untested_version_notice)
    return import_backend("coremltools", "coreml")


def convert_coreml(model: nn.Module, example: torch.Tensor, config: CoreMLConfig) -> CoreMLConversion:
    """Trace `model` on `example` and convert it to an ML Program (in memory; `save_mlpackage` writes it)."""
    from deploykit.export.coreml_compat import apply_fixes

    ct = import_coremltools()
    apply_fixes(ct)
    traced = _trace(model, example)
    guard = Fp16Guard(config.keep_fp32) if config.precision == "fp16" else None
    try:
        mlmodel = ct.convert(traced, inputs=[_input_type(ct, example, config.image)],
                             outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)],
                             convert_to="mlprogram", compute_precision=_precision(ct, config.precision, guard),
                             compute_units=getattr(ct.ComputeUnit, config.compute_units.upper()),
                             minimum_deployment_target=getattr(ct.target, config.deployment_target))
    except Exception as exc:  # noqa: BLE001 - the converter raises many types; translate them all
        raise conversion_error(exc, traced, model) from exc
    result = CoreMLConversion(mlmodel, kept_fp32=dict(guard.kept) if guard else {})
    if guard:
        result.warnings += guard.unmapped_warnings()
    if config.weights_int8:
        result.mlmodel = quantize_weights_int8(mlmodel)
    return result


def _trace(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about constants are about the model, not the user
        return torch.jit.trace(model, example, check_trace=False)  # parity is checked on the artifact


def _input_type(ct, example: torch.Tensor, image: ImageInput | None):
    shape = tuple(example.shape)
    if image is None:
        return ct.TensorType(name=INPUT_NAME, shape=shape, dtype=np.float32)
    layout = {"RGB": ct.colorlayout.RGB, "BGR": ct.colorlayout.BGR, "G": ct.colorlayout.GRAYSCALE}
    bias = list(image.bias) if len(image.bias) > 1 else image.bias[0]
    return ct.ImageType(name=INPUT_NAME, shape=shape, scale=image.scale, bias=bias,
                        color_layout=layout[image.color_layout])


def _precision(ct, precision: str, guard: "Fp16Guard | None"):
    if precision == "fp32":
        return ct.precision.FLOAT32
    return ct.transform.FP16ComputePrecision(op_selector=guard)


def save_mlpackage(mlmodel, path: Path) -> None:
    mlmodel.save(str(path))


def quantize_weights_int8(mlmodel):
    """Weight-only int8: per-channel symmetric, weights under 2048 elements left as they are
    (coremltools' default threshold: quantizing a 3x3x3 stem saves nothing and costs accuracy)."""
    import coremltools.optimize.coreml as cto

    op_config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8")
    config = cto.OptimizationConfig(global_config=op_config)
    return cto.linear_quantize_weights(mlmodel, config=config)


def quantize_activations_int8(mlmodel, samples: list[np.ndarray]):
    """W8A8: activation ranges calibrated on `samples`, then int8 weights. coremltools calibrates
    by running the model in Core ML, so this works on macOS only."""
    import coremltools.optimize.coreml as cto
    from coremltools.optimize.coreml import experimental

    op_config = experimental.OpActivationLinearQuantizerConfig(mode="linear_symmetric")
    config = cto.OptimizationConfig(global_config=op_config)
    activations = experimental.linear_quantize_activations(mlmodel, config, [{INPUT_NAME: s} for s in samples])
    return quantize_weights_int8(activations)


class Fp16Guard:
    """`op_selector` for FP16ComputePrecision: True casts an op to fp16, False keeps it in fp32.

    Kept in fp32: the conv/linear ops of flagged layers (found by their weight's parameter name),
    and every op that reads a tensor one of them made large; a later conv/linear that is not
    flagged brings the values back in range and goes back to fp16. Ops arrive in program order.
    """

    def __init__(self, keep: dict[str, bool]) -> None:
        self.keep = {_sanitize(f"{layer}.weight"): (layer, large) for layer, large in keep.items()}
        self.large_vars: set[str] = set()
        self.kept: dict[str, str] = {}

    def __call__(self, op) -> bool:
        if op.op_type == "const":
            return True
        weight = op.inputs.get("weight")
        if weight is not None and weight.op is not None and weight.op.op_type == "const":
            return self._parametric(op, _sanitize(weight.op.name))
        if any(var.name in self.large_vars for var in _input_vars(op)):
            self._keep(op, "(reads a large tensor)", large=True)
            return False
        return True

    def _parametric(self, op, weight_name: str) -> bool:
        if weight_name not in self.keep:
            return True
        layer, large = self.keep[weight_name]
        self._keep(op, layer, large)
        return False

    def _keep(self, op, layer: str, large: bool) -> None:
        self.kept[op.name] = layer
        if large:
            self.large_vars.update(var.name for var in op.outputs)

    def unmapped_warnings(self) -> list[str]:
        found = set(self.kept.values())
        missing = [layer for layer, _ in self.keep.values() if layer not in found]
        if not missing:
            return []
        return [f"fp16 range: layers {', '.join(missing)} exceed half the fp16 range but their ops were not "
                "found in the Core ML program, so they run in fp16 and may overflow; use --precision fp32"]


def _input_vars(op) -> list:
    found = []
    for value in op.inputs.values():
        found += list(value) if isinstance(value, (list, tuple)) else [value]
    return found


def _sanitize(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z]", "_", name)


def conversion_error(exc: Exception, traced: torch.jit.ScriptModule, model: nn.Module) -> DeployKitError:
    """One clear error; an op without a converter is named with the layers that use it."""
    text = str(exc)
    match = re.search(r"op '([\w:.]+)' not implemented", text)
    if match is None:
        first = text.splitlines()[0] if text else type(exc).__name__
        return DeployKitError(f"Core ML conversion failed: {type(exc).__name__}: {first}",
                              fix="report this model with the message above")
    op = match.group(1)
    layers = ", ".join(_layers_using(traced, model, op)) or "unknown layer"
    return DeployKitError(f"Core ML cannot convert op '{op}' used by {layers}: coremltools "
                          f"{import_coremltools().__version__} has no converter for it",
                          fix="replace that op in the model, or give coremltools a converter "
                              "(@register_torch_op); the ONNX target may still work")


def _layers_using(traced: torch.jit.ScriptModule, model: nn.Module, op: str) -> list[str]:
    layers = []
    for node in traced.inlined_graph.nodes():
        if node.kind().split("::")[-1] == op:
            path = node.scopeName().split("/")[-1].replace("__module.", "")
            kind = type(model.get_submodule(path)).__name__ if path else type(model).__name__
            layers.append(f"{path or '<top-level forward>'} ({kind})")
    return sorted(set(layers))


def image_input(model: nn.Module, preprocess: Preprocess) -> tuple[nn.Module, ImageInput]:
    """The model and ImageType settings that reproduce `preprocess` from raw pixels, exactly.

    Core ML applies one scale to every channel. With per-channel std the ImageType divides by the
    mean std, and the remaining per-channel ratio mean(std)/std[c] is folded into the first conv's
    input channels (a copy of the model): the normalised input is that ratio times the ImageType's
    output, and scaling a conv's input channels is scaling its weights. Zero padding stays exact
    because the mean is removed before the ratio applies.
    """
    ref = float(np.mean(preprocess.std))
    image = ImageInput(scale=preprocess.scale / ref, bias=tuple(-m / ref for m in preprocess.mean),
                       color_layout={"RGB": "RGB", "BGR": "BGR", "L": "G"}[preprocess.channels])
    ratio = torch.tensor([ref / s for s in preprocess.std])
    if torch.allclose(ratio, torch.ones_like(ratio)):
        return model, image
    return scale_first_conv_inputs(model, ratio), image


def scale_first_conv_inputs(model: nn.Module, ratio: torch.Tensor) -> nn.Module:
    """A copy of `model` whose first conv computes conv(ratio[c] * x) for input x."""
    name = _first_conv(model)
    folded = copy.deepcopy(model)
    conv = folded.get_submodule(name)
    with torch.no_grad():
        conv.weight.mul_(ratio.to(conv.weight).reshape(1, -1, 1, 1))
    return folded


def _first_conv(model: nn.Module) -> str:
    """The conv layer that alone reads the model input; anything else cannot take the fold."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as exc:  # noqa: BLE001 - fx raises whatever the model's Python does
        raise DeployKitError(f"--image-input cannot find the first layer ({type(exc).__name__}: {exc})",
                             fix="export without --image-input and normalise in the app") from exc
    placeholder = next(n for n in graph.nodes if n.op == "placeholder")
    users = list(placeholder.users)
    if len(users) == 1 and users[0].op == "call_module":
        module = model.get_submodule(users[0].target)
        if isinstance(module, nn.Conv2d) and module.groups == 1:
            return users[0].target
    raise DeployKitError("--image-input with per-channel std needs the input to feed one conv layer "
                         f"directly, but it goes to {', '.join(str(u.target) for u in users)}",
                         fix="export without --image-input and normalise in the app")
