"""Activation ranges for every calibration method from ONE pass of the model over the calibration images.

ONNX Runtime's calibrators each run their own augmented model over all the images, so trying minmax,
entropy and percentile cost three passes (and most of an int8 export's time). Here the model, with every
float tensor exposed as an output, runs once; each chunk of its tensors feeds a running min/max and ONNX
Runtime's own histogram collectors (the same numerics as its calibrators, with their default settings), and
each method's ranges are written as the calibration cache `quantize_static` reads. The only module beside
`export.quantize` that touches `onnxruntime.quantization`.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Iterable

import numpy as np

CHUNK_IMAGES = 16  # histogram collectors hold every activation of a chunk in memory at once
# ONNX Runtime's create_calibrator defaults for each histogram method
HISTOGRAMS = {
    "entropy": {"method": "entropy", "symmetric": False, "num_bins": 128, "num_quantized_bins": 128},
    "percentile": {"method": "percentile", "symmetric": True, "num_bins": 2048, "num_quantized_bins": 128},
}
PERCENTILE = 99.999


def collect_ranges(prepared: Path, batches: list[np.ndarray], *, workdir: Path, input_name: str,
                   methods: Iterable[str]) -> dict[str, object]:
    """`{method: TensorsData}` for each of `methods` (minmax, entropy, percentile), and `mean_maps`
    (`{tensor: mean (C, H, W) map}` of the 4-D tensors), from one pass."""
    session, names, wanted = _augmented_session(prepared, workdir)
    low: dict[str, np.ndarray] = {}
    high: dict[str, np.ndarray] = {}
    means = MeanMaps()
    collectors = {m: _collector(m) for m in methods if m in HISTOGRAMS}
    for chunk in _chunks(batches, max(1, CHUNK_IMAGES // len(batches[0]))):
        for name, arrays in _run_chunk(session, names, wanted, chunk, input_name).items():
            _collect_tensor(name, arrays, low, high, collectors)
            means.add(name, arrays)
    return {**_results(methods, low, high, collectors), "mean_maps": means.result()}


class MeanMaps:
    """Each 4-D tensor's mean over the calibration images, per channel and position (what bias correction
    needs: a 3x3 conv's border taps read padding, so on small maps the per-channel mean alone is wrong)."""

    def __init__(self) -> None:
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, arrays: list[np.ndarray]) -> None:
        for array in arrays:
            if array.ndim == 4:
                self.sums[name] = self.sums.get(name, 0) + array.sum(axis=0, dtype=np.float64)
                self.counts[name] = self.counts.get(name, 0) + array.shape[0]

    def result(self) -> dict[str, np.ndarray]:
        return {name: total / self.counts[name] for name, total in self.sums.items()}


def _collect_tensor(name: str, arrays: list[np.ndarray], low: dict, high: dict, collectors: dict) -> None:
    """One tensor's chunk into every method: flattened once, its min and max computed once (each of ORT's
    collectors would copy and scan it again: most of the calibration time)."""
    values = np.concatenate([a.ravel() for a in arrays]) if len(arrays) > 1 else arrays[0].ravel()
    lo, hi = (_extreme(values, np.min, np.nanmin), _extreme(values, np.max, np.nanmax)) if values.size else \
        (values.dtype.type(0),) * 2
    _update_min_max(name, values.dtype, lo, hi, low, high)
    for collector in collectors.values():
        collector.add(name, values, lo, hi)


def save_ranges(ranges, path: Path) -> Path:
    """Write one method's ranges where `quantize_static(calibration_cache_path=...)` reads them."""
    from onnxruntime.quantization.calibrate import save_tensors_data

    save_tensors_data(ranges, path)
    return path


def _augmented_session(prepared: Path, workdir: Path):
    """ONNX Runtime's histogram calibrator augments the graph with every float tensor as an output; its
    session is the one pass (the tensors it calibrates are the same for every method)."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    calibrator = create_calibrator(Path(prepared), [], augmented_model_path=str(workdir / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy)
    session = calibrator.infer_session
    names = [output.name for output in session.get_outputs()]
    return session, names, set(calibrator.tensors_to_calibrate)


def _collector(method: str):
    return _collector_type()(**HISTOGRAMS[method], percentile=PERCENTILE, scenario="same")


def _collector_type():
    """ONNX Runtime's collector, fed a tensor whose min and max are already known (`add`), with one change: the
    percentile histogram's uniform bins are counted with numpy's uniform-bin path. ORT passes the bin edges as
    an array, which makes numpy sort every activation (O(n log n): 15 of 29 s of calibrating resnet56_cifar);
    the edges are uniform by construction, so the counts are the same up to values within float rounding of
    an edge. The entropy histogram is ORT's `collect_value` step by step, without its own min/max scans."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    class KnownRangeCollector(HistogramCollector):
        def add(self, tensor: str, values: np.ndarray, lo, hi) -> None:
            if self.method == "percentile":  # ORT's collect_absolute_value (symmetric)
                self.histogram_dict[tensor] = _merge_absolute(self.histogram_dict.get(tensor), values, lo, hi,
                                                              self.num_bins)
            else:
                self._add_value(tensor, values, lo, hi)

        def _add_value(self, tensor, values, lo, hi) -> None:
            threshold = np.array(max(abs(lo), abs(hi)), dtype=values.dtype)
            old = self.histogram_dict.get(tensor)
            if old is not None:
                self.histogram_dict[tensor] = self.merge_histogram(old, values, lo, hi, threshold)
                return
            hist, edges = np.histogram(values, self.num_bins, range=(-threshold, threshold))
            self.histogram_dict[tensor] = (hist, edges, lo, hi, threshold)

    return KnownRangeCollector


def _merge_absolute(old: tuple | None, values: np.ndarray, low, high, num_bins: int) -> tuple:
    """ORT's (hist, edges, min, max) of |values|, merged into `old`: its bins keep their width and grow
    to the right when larger magnitudes arrive."""
    magnitudes = np.absolute(values)
    if old is None:
        hist, edges = np.histogram(magnitudes, bins=num_bins)
        return hist, edges.astype(values.dtype), low, high
    old_hist, edges, old_low, old_high = old
    peak = max(abs(low), abs(high))  # the largest magnitude, without another scan
    if peak > edges[-1]:
        width = edges[1] - edges[0]
        edges = np.hstack((edges, np.arange(edges[-1] + width, peak + width, width)))
    hist, _ = np.histogram(magnitudes, bins=len(edges) - 1, range=(float(edges[0]), float(edges[-1])))
    hist[:len(old_hist)] += old_hist
    return hist, edges.astype(values.dtype), min(old_low, low), max(old_high, high)


def _chunks(batches: list[np.ndarray], size: int) -> Iterable[list[np.ndarray]]:
    for start in range(0, len(batches), size):
        yield batches[start:start + size]


def _run_chunk(session, names: list[str], wanted: set[str], chunk: list[np.ndarray],
               input_name: str) -> dict[str, list[np.ndarray]]:
    tensors: dict[str, list[np.ndarray]] = {}
    for batch in chunk:
        for name, value in zip(names, session.run(None, {input_name: batch})):
            if name in wanted:
                tensors.setdefault(name, []).append(value)
    return tensors


def _update_min_max(name: str, dtype, lo, hi, low: dict, high: dict) -> None:
    """The minmax calibrator's result: the smallest and largest value seen, NaN ignored (shaped (1,), as its
    ReduceMin/ReduceMax outputs are)."""
    lo, hi = np.array([lo], dtype=dtype), np.array([hi], dtype=dtype)
    low[name] = lo if name not in low else np.minimum(low[name], lo)
    high[name] = hi if name not in high else np.maximum(high[name], hi)


def _extreme(values: np.ndarray, plain, nan_aware):
    """min/max ignoring NaN, at the plain reduction's speed when there is none (the usual case)."""
    result = plain(values)
    return nan_aware(values) if np.isnan(result) else result


def _results(methods: Iterable[str], low: dict, high: dict, collectors: dict) -> dict[str, object]:
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import TensorsData

    kinds = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}
    results = {}
    for method in methods:
        if method == "minmax":
            results[method] = TensorsData(kinds[method], {n: (low[n], high[n]) for n in low})
        else:
            with quiet():
                results[method] = TensorsData(kinds[method], collectors[method].compute_collection_result())
    return results


@contextlib.contextmanager
def quiet():
    """ORT's quantizer and collectors print progress to stdout; keep it out of the user's terminal (errors still raise)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield
