"""ONNX Runtime's static quantizer behind one adapter: float ONNX + calibration batches -> int8 QDQ ONNX
in a runtime's layout (`export.qdq_layout`). With `export.calibrate`, the only modules that import
`onnxruntime.quantization`.

The format is explicit quantization (QuantizeLinear/DequantizeLinear pairs), which ONNX Runtime, OpenVINO
and TensorRT all consume; where the pairs go and in which type is the layout's. Every calibration method's
ranges come from one pass over the images (`export.calibrate`) and are cached per model and images, so
the candidates (method, per-channel or per-tensor weights, layers left in float) only re-run the quantizer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from deploykit.core.errors import DeployKitError
from deploykit.export.calibrate import quiet as _quiet
from deploykit.export.qdq_graph import keep_outputs_float, read_float_inputs
from deploykit.export.qdq_layout import LAYOUTS, QdqLayout

METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class QuantizeConfig:
    """One int8 candidate."""

    method: str = "minmax"
    per_channel: bool = True
    exclude: tuple[str, ...] = ()  # ONNX node names left in float
    bias_correction: bool | None = None  # None: as the layout says

    def label(self) -> str:
        weights = "per-channel" if self.per_channel else "per-tensor"
        kept = f", {len(self.exclude)} layers float" if self.exclude else ""
        corrected = {None: "", True: ", biases corrected", False: ", biases uncorrected"}[self.bias_correction]
        return f"{self.method} / {weights}{kept}{corrected}"


def prepare_for_quantization(float_path: Path, out: Path) -> Path:
    """ORT's recommended pre-processing (shape inference, basic graph optimization): the quantizer
    needs the shapes to quantize every tensor."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with _quiet():
        try:
            quant_pre_process(str(float_path), str(out), skip_symbolic_shape=True)
        except Exception as exc:  # noqa: BLE001 - ORT raises assorted types from its optimizer
            raise DeployKitError(f"ONNX Runtime could not prepare the model for quantization: {exc}",
                                 fix="export without int8, and report this model") from exc
    return out


class Int8Quantizer:
    """Quantizes one (prepared) float model in as many configurations as asked, in one layout. `batches`
    are the range-setting inputs, already preprocessed; ranges are collected on first use, for every
    method in `methods` at once."""

    def __init__(self, prepared: Path, batches: Iterable[np.ndarray], *, workdir: Path,
                 layout: QdqLayout = LAYOUTS["onnxruntime"], methods: tuple[str, ...] = METHODS,
                 input_name: str = "input") -> None:
        self.prepared, self.workdir, self.layout = Path(prepared), Path(workdir), layout
        self.input_name, self.methods = input_name, tuple(methods)
        self.batches = list(batches)
        if not self.batches:
            raise DeployKitError("no calibration batches to quantize with",
                                 fix="give more images with --calib, or export with a smaller --batch")
        self.key = _ranges_key(self.prepared, self.batches)

    def quantize(self, config: QuantizeConfig, out: Path) -> Path:
        from onnxruntime.quantization import QuantFormat, quantize_static

        if config.method not in METHODS:
            raise DeployKitError(f"unknown calibration method {config.method!r}", fix=f"one of {', '.join(METHODS)}")
        arguments = self.layout.quantizer_arguments(self.sign_ranges())
        with _quiet():
            try:
                quantize_static(
                    str(self.prepared), str(out), None, quant_format=QuantFormat.QDQ, per_channel=config.per_channel,
                    nodes_to_exclude=list(config.exclude), calibrate_method=_method(config.method),
                    calibration_cache_path=str(self.ranges_file(config.method)), **arguments)
            except Exception as exc:  # noqa: BLE001 - the quantizer raises bare ValueErrors/asserts
                raise DeployKitError(f"ONNX Runtime's quantizer failed ({config.label()}): {exc}",
                                     fix="try another --calib-method or --per-channel, and report this model") from exc
        if config.exclude:
            read_float_inputs(out, set(config.exclude), self.prepared)
        if self.layout.bias_correction if config.bias_correction is None else config.bias_correction:
            from deploykit.export.bias_correction import correct_biases

            correct_biases(out, self.prepared, self.mean_maps())
        keep_outputs_float(out)
        return out

    def sign_ranges(self):
        """The minmax ranges, which say where tensors are never negative (None if the layout does not ask)."""
        if not self.layout.unsigned_when_non_negative:
            return None
        from onnxruntime.quantization.calibrate import load_tensors_data

        return load_tensors_data(self.ranges_file("minmax"))

    def ranges_file(self, method: str) -> Path:
        """The cached ranges of `method`; the first call collects every method's in one pass."""
        path = self.workdir / f"ranges-{method}-{self.key}.json"
        if not (path.is_file() and self.means_file().is_file()):
            from deploykit.export.calibrate import collect_ranges, save_ranges

            methods = tuple(dict.fromkeys((*self.methods, method, "minmax")))
            ranges = collect_ranges(self.prepared, self.batches, workdir=self.workdir,
                                    input_name=self.input_name, methods=methods)
            maps = ranges.pop("mean_maps")
            np.savez(self.means_file(), *maps.values(), names=np.array(list(maps)))
            for name, data in ranges.items():
                save_ranges(data, self.workdir / f"ranges-{name}-{self.key}.json")
        return path

    def means_file(self) -> Path:
        return self.workdir / f"means-{self.key}.npz"

    def mean_maps(self) -> dict[str, np.ndarray]:
        with np.load(self.means_file()) as saved:  # plain arrays: no pickle
            return {str(name): saved[f"arr_{i}"] for i, name in enumerate(saved["names"])}


def _ranges_key(model: Path, batches: list[np.ndarray]) -> str:
    """Full sha256 of the model file and the calibration inputs: cached ranges belong to both."""
    digest = hashlib.sha256(model.read_bytes())
    for batch in batches:
        digest.update(np.ascontiguousarray(batch).tobytes())
    return digest.hexdigest()


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]
