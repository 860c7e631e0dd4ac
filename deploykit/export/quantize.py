"""ONNX Runtime's static quantizer behind one adapter: float ONNX + calibration batches -> int8 QDQ ONNX.
The only module that imports `onnxruntime.quantization`.

The format is explicit quantization (QuantizeLinear/DequantizeLinear pairs), which ONNX Runtime,
OpenVINO and TensorRT all consume. Two choices follow TensorRT, the strictest of the three:
- S8S8: activations and weights symmetric int8 (zero point 0); TensorRT accepts nothing else. OpenVINO
  runs it on its u8 x s8 kernels all the same. The cost is one bit of range on post-ReLU tensors.
- Q/DQ on the inputs of quantized ops only, never on their outputs (TensorRT's placement, and NNCF's for
  OpenVINO): Conv -> ReLU -> Q -> DQ -> Conv, so ReLU is fused in float and each tensor is rounded once.
  Leaving a node out (`exclude`) then removes exactly its own rounding: its weights and its inputs.
  ONNX Runtime's CPU kernels fuse only DQ -> Conv -> Q, so there the convs followed by an activation
  run in float between Q/DQ pairs; measure before choosing int8 on ORT (scripts/bench_int8.py).

Each calibration method's tensor ranges are computed once per float model and cached, so the candidates
(per-channel or per-tensor weights, layers left in float) only re-run the quantizer, not calibration.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from deploykit.core.errors import DeployKitError

METHODS = ("minmax", "entropy", "percentile")
CHUNK_IMAGES = 16  # histogram calibrators hold every activation of a chunk in memory at once
SCHEME = {"format": "QDQ", "activations": "int8 symmetric (zero point 0)", "weights": "int8 symmetric",
          "placement": "Q/DQ on the inputs of quantized ops only",
          "why": "TensorRT requires symmetric int8 and recommends input-only Q/DQ; ONNX Runtime and OpenVINO "
                 "run the same file"}


@dataclass(frozen=True)
class QuantizeConfig:
    """One int8 candidate."""

    method: str = "minmax"
    per_channel: bool = True
    exclude: tuple[str, ...] = ()  # ONNX node names left in float

    def label(self) -> str:
        weights = "per-channel" if self.per_channel else "per-tensor"
        kept = f", {len(self.exclude)} layers float" if self.exclude else ""
        return f"{self.method} / {weights}{kept}"


def prepare_for_quantization(float_path: Path, out: Path) -> Path:
    """ORT's recommended pre-processing (shape inference, basic graph optimization): the quantizer
    needs the shapes to quantize every tensor."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with _quiet():
        try:
            quant_pre_process(str(float_path), str(out), skip_symbolic_shape=True)
        except Exception as exc:  # noqa: BLE001 - ORT raises assorted types from its optimizer
            raise DeployKitError(f"ONNX Runtime could not prepare the model for quantization: {exc}",
                                 fix="export without --int8, and report this model") from exc
    return out


class Int8Quantizer:
    """Quantizes one (prepared) float model in as many configurations as asked, calibrating each
    method once. `batches` are the range-setting inputs, already preprocessed."""

    def __init__(self, prepared: Path, batches: Iterable[np.ndarray], *, workdir: Path, input_name: str = "input"):
        self.prepared = Path(prepared)
        self.workdir = Path(workdir)
        self.input_name = input_name
        self.batches = list(batches)
        if not self.batches:
            raise DeployKitError("no calibration batches to quantize with",
                                 fix="give more images with --calib, or export with a smaller --batch")
        self.key = _ranges_key(self.prepared, self.batches)

    def quantize(self, config: QuantizeConfig, out: Path) -> Path:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        if config.method not in METHODS:
            raise DeployKitError(f"unknown calibration method {config.method!r}", fix=f"one of {', '.join(METHODS)}")
        cache = self.workdir / f"ranges-{config.method}-{self.key}.json"
        reader = None if cache.is_file() else _ChunkReader(self.batches, self.input_name)
        with _quiet():
            try:
                quantize_static(
                    str(self.prepared), str(out), reader, quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=config.per_channel,
                    nodes_to_exclude=list(config.exclude), calibrate_method=_method(config.method),
                    calibration_cache_path=str(cache), extra_options=self._extra_options(reader),
                )
            except Exception as exc:  # noqa: BLE001 - the quantizer raises bare ValueErrors/asserts
                raise DeployKitError(f"ONNX Runtime's quantizer failed ({config.label()}): {exc}",
                                     fix="try another --calib-method or --per-channel, and report this model") from exc
        return out

    @staticmethod
    def _extra_options(reader: "_ChunkReader | None") -> dict:
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        options = {"ActivationSymmetric": True, "WeightSymmetric": True,
                   "OpTypesToExcludeOutputQuantization": sorted(set(QDQRegistry) | set(QLinearOpsRegistry))}
        if reader is not None:
            options["CalibStridedMinMax"] = 1  # one reader item = one chunk (see _ChunkReader)
        return options


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


class _ChunkReader:
    """ORT's calibration data reader (duck-typed: ORT checks for `get_next`) over batches grouped in
    chunks. ORT's strided mode calls `set_range(k, k + 1)` then collects: here one "item" is a chunk, so
    histogram calibrators merge chunk by chunk instead of holding every activation of every image."""

    def __init__(self, batches: list[np.ndarray], input_name: str) -> None:
        per_chunk = max(1, CHUNK_IMAGES // len(batches[0]))
        self.chunks = [batches[i:i + per_chunk] for i in range(0, len(batches), per_chunk)]
        self.input_name = input_name
        self._pending: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.chunks)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending = [b for chunk in self.chunks[start_index:end_index] for b in chunk]

    def get_next(self) -> dict | None:
        if not self._pending:
            return None
        return {self.input_name: self._pending.pop(0)}


@contextlib.contextmanager
def _quiet():
    """ORT's quantizer prints progress to stdout; keep it out of the user's terminal (errors still raise)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield
