"""Regenerate the "int8-peers" section of BENCHMARKS.md: deploykit's int8 against what a user would type
instead, side by side in one run on the same float ONNX and the same calibration images.

Peers (each given all of deploykit's drawn calibration images, with their defaults otherwise):
- ORT U8S8: `quantize_static(QDQ, QUInt8 activations, QInt8 weights, per_channel=True, MinMax)`;
- ORT S8S8: the same with QInt8 activations;
- NNCF: `nncf.quantize(onnx_model, nncf.Dataset(images))` (OpenVINO's own quantizer).
deploykit: `deploykit export MODEL --int8 --calib ... --device host-cpu-ort` (the ONNX Runtime layout) and
`--device host-cpu-openvino` (the OpenVINO layout), defaults otherwise (auto search, 1-point budget).

Latency: per runtime, the float ONNX and every int8 file timed in alternating blocks in one run (batch 1),
as int8/float ratios. Accuracy: top-1 of every int8 file in both runtimes on the evaluation images
(resnet56 and the trained CIFAR checkpoints: all 10,000 cifar10/test; efficientnet_lite0: the 1,000
imagenet_val1300 images outside the 300 calibration images). mobileone_s1 and repvgg_a0 have no released
weights: their BN statistics come from 64 real images, so their speed is real and their accuracy is not
measured. Export time: wall seconds of each tool from the float ONNX (deploykit's includes its own float
export, parity gates, search and the int8-vs-float timing).

Usage (from the project root):
    python scripts/bench_int8_peers.py [--models resnet56_cifar,...] [--runs 100] [--threads 2]
                                       [--skip-accuracy] [--work DIR] [--update BENCHMARKS.md]
    python scripts/bench_int8_peers.py --latency-from DIR [--update BENCHMARKS.md]

`--work DIR` keeps the artifacts and results; `--latency-from DIR` times them again (accuracy and export
times kept): builds and accuracy can run on a busy machine, latency once it is quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script from anywhere
from deploykit import zoo  # noqa: E402
from deploykit.core.paths import data_dir  # noqa: E402
from deploykit.data import batches, open_dataset  # noqa: E402
from deploykit.data.calibration import CalibrationConfig, exclude_calibration, open_calibration  # noqa: E402
from deploykit.pipeline.export import ExportRequest, export  # noqa: E402
from deploykit.profile.latency import measure_side_by_side  # noqa: E402
from deploykit.runtimes.onnxruntime import OrtModel  # noqa: E402
from deploykit.runtimes.openvino import OpenVINOModel  # noqa: E402
from scripts.bench_int8 import conditioned_weights  # noqa: E402
from scripts.bench_md import machine, update_section  # noqa: E402

IMAGENET = "imagenet_val1300"
TOOLS = ("deploykit", "ORT U8S8", "ORT S8S8", "NNCF")


@dataclass(frozen=True)
class Case:
    model: str
    calib: str
    calib_options: dict
    eval_data: str | None  # None: speed only (no trained weights)
    exclude_calib: bool = False


CASES = {c.model: c for c in (
    Case("resnet56_cifar", "cifar10/train", {"calib_size": 512}, "cifar10/test"),
    Case("efficientnet_lite0", IMAGENET, {"calib_split": 300}, IMAGENET, exclude_calib=True),
    Case("mobileone_s1", IMAGENET, {"calib_size": 300}, None),
    Case("repvgg_a0", IMAGENET, {"calib_size": 300}, None),
    Case("mobileone_s0_cifar", "cifar10/train", {"calib_size": 512}, "cifar10/test"),
    Case("repvgg_a0_cifar", "cifar10/train", {"calib_size": 512}, "cifar10/test"),
)}


@dataclass
class Result:
    case: Case
    files: dict = field(default_factory=dict)  # (tool, runtime or "") -> path
    seconds: dict = field(default_factory=dict)  # tool -> export seconds
    latency: dict = field(default_factory=dict)  # runtime -> {label: p50 ms}
    top1: dict = field(default_factory=dict)  # runtime -> {label: top-1}
    notes: list = field(default_factory=list)
    calib_record: dict | None = None
    n_eval: int = 0

    def to_json(self) -> dict:
        files = {f"{tool}|{where}": str(path) for (tool, where), path in self.files.items()}
        return {"model": self.case.model, "files": files, "seconds": self.seconds, "top1": self.top1,
                "notes": self.notes, "calib_record": self.calib_record, "n_eval": self.n_eval}

    @classmethod
    def from_json(cls, data: dict) -> "Result":
        files = {tuple(key.split("|", 1)): Path(path) for key, path in data["files"].items()}
        notes = [n for n in data["notes"] if "timing rounds" not in n]  # latency notes are remeasured
        return cls(CASES[data["model"]], files, data["seconds"], {}, data["top1"], notes,
                   data["calib_record"], data["n_eval"])


# --- building ---------------------------------------------------------------------------------------

def float_onnx(case: Case, work: Path) -> tuple[Path, Path | None]:
    weights = conditioned_weights(case.model, work / "w.pth") if case.eval_data is None else None
    return export(ExportRequest(model=case.model, weights=weights, out_dir=work / "float")).artifact, weights


def deploykit_int8(case: Case, weights: Path | None, device: str, work: Path, result: Result) -> None:
    options = {"int8": True, "calib": data_dir() / case.calib, "device": device, **case.calib_options}
    start = time.perf_counter()
    try:
        outcome = export(ExportRequest(model=case.model, weights=weights, out_dir=work / device, options=options))
    except Exception as exc:  # noqa: BLE001 - a random net's gate failure is a finding, reported in the table
        result.notes.append(f"deploykit --device {device}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        if case.eval_data is None:
            speed_only_int8(case, device, work, result)
        return
    result.seconds[f"deploykit ({device})"] = time.perf_counter() - start
    result.files[("deploykit", device)] = outcome.artifact
    result.calib_record = outcome.manifest.extra["int8"]["calibration"]


def speed_only_int8(case: Case, device: str, work: Path, result: Result) -> None:
    """A random net's logits are near-uniform, so int8 noise flips its argmax and the export's gate (rightly)
    refuses it: for speed, the graph the export writes by default (minmax, per-channel, every layer int8,
    the device runtime's layout) is built with the same quantizer, from the same float ONNX and images."""
    from deploykit.core.devices import load_device
    from deploykit.export.qdq_layout import layout_for_runtime
    from deploykit.export.quantize import Int8Quantizer, QuantizeConfig, prepare_for_quantization

    out = work / f"{device}-speed"
    out.mkdir(exist_ok=True)
    prepared = prepare_for_quantization(result.files[("float", "")], out / "prepared.onnx")
    images = calibration_images(case)
    layout = layout_for_runtime(load_device(device).runtime)
    quantizer = Int8Quantizer(prepared, images, workdir=out, layout=layout)
    result.files[("deploykit", device)] = quantizer.quantize(QuantizeConfig(), out / "int8.onnx")
    result.notes.append(f"deploykit --device {device}: timed the default-layout graph built by the same "
                        "quantizer (the random net's gate refusal above)")


def calibration_images(case: Case) -> list[np.ndarray]:
    """The images deploykit draws (ranges and held-out slices together): every tool calibrates on them."""
    calib = open_calibration(CalibrationConfig(data_dir() / case.calib, size=case.calib_options.get("calib_size"),
                                               split=case.calib_options.get("calib_split")))
    return [images for images, _ in batches(calib.drawn, zoo.get(case.model).preprocess, 1)]


def ort_peer(float_path: Path, images: list[np.ndarray], activations: str, out: Path) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader:
        def __init__(self):
            self.items = iter(images)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {"input": item}

    prepared = out.with_suffix(".prep.onnx")
    quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8 if activations == "u8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    return out


def nncf_peer(float_path: Path, images: list[np.ndarray], out: Path) -> Path:
    import nncf

    quantized = nncf.quantize(onnx.load(str(float_path)), nncf.Dataset(images, lambda x: {"input": x}),
                              subset_size=len(images))
    onnx.save(quantized, str(out))
    return out


def build_peers(float_path: Path, images: list[np.ndarray], work: Path, result: Result) -> None:
    peers = {"ORT U8S8": lambda p: ort_peer(float_path, images, "u8", p),
             "ORT S8S8": lambda p: ort_peer(float_path, images, "s8", p),
             "NNCF": lambda p: nncf_peer(float_path, images, p)}
    for tool, build in peers.items():
        start = time.perf_counter()
        result.files[(tool, "")] = build(work / f"{tool.replace(' ', '_')}.onnx")
        result.seconds[tool] = time.perf_counter() - start


# --- measuring --------------------------------------------------------------------------------------

def int8_files(result: Result, runtime: str) -> dict[str, Path]:
    """What runs on `runtime`: deploykit's file for that runtime's device, and every peer."""
    device = {"onnxruntime": "host-cpu-ort", "openvino": "host-cpu-openvino"}[runtime]
    files = {tool: path for (tool, where), path in result.files.items() if tool not in ("deploykit", "float")}
    if ("deploykit", device) in result.files:
        files = {"deploykit": result.files[("deploykit", device)], **files}
    return files


def load(path: Path, runtime: str, threads: int):
    return OrtModel(path, threads=threads) if runtime == "onnxruntime" else \
        OpenVINOModel(path, threads=threads, precision="f32")


def measure_latency(float_path: Path, result: Result, runs: int, threads: int) -> None:
    size = zoo.get(result.case.model).preprocess.input_size
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    for runtime in ("onnxruntime", "openvino"):
        models = {"float": load(float_path, runtime, threads)}
        models.update({tool: load(p, runtime, threads) for tool, p in int8_files(result, runtime).items()})
        stats = measure_side_by_side({k: (lambda m=m: m.run(x)) for k, m in models.items()}, runs=runs, warmup=10)
        result.latency[runtime] = {k: s.p50_ms for k, s in stats.items()}
        unstable = [k for k, s in stats.items() if (s.spread or 0) > 0.10]
        if unstable:
            result.notes.append(f"{runtime}: timing rounds disagreed by >10 % for {', '.join(unstable)}")


def eval_images(result: Result) -> tuple[np.ndarray, np.ndarray]:
    case = result.case
    dataset = open_dataset(data_dir() / case.eval_data)
    if case.exclude_calib:
        dataset, _ = exclude_calibration(dataset, data_dir() / case.eval_data, result.calib_record)
    xs, ys = zip(*batches(dataset, zoo.get(case.model).preprocess, 1))
    return np.concatenate(xs), np.concatenate(ys)


def measure_accuracy(float_path: Path, result: Result, threads: int) -> None:
    x, y = eval_images(result)
    for runtime in ("onnxruntime", "openvino"):
        files = {"float": float_path, **int8_files(result, runtime)}
        result.top1[runtime] = {tool: _top1(load(p, runtime, threads), x, y) for tool, p in files.items()}
    result.n_eval = len(y)


def _top1(model, x: np.ndarray, y: np.ndarray) -> float:
    predictions = np.array([model.run(x[i:i + 1]).argmax(1)[0] for i in range(len(x))])
    return float((predictions == y).mean())


def bench(case: Case, *, runs: int, threads: int, accuracy: bool, tmp: Path) -> Result:
    work = tmp / case.model
    work.mkdir()
    result = Result(case)
    float_path, weights = float_onnx(case, work)
    result.files[("float", "")] = float_path
    for device in ("host-cpu-ort", "host-cpu-openvino"):
        deploykit_int8(case, weights, device, work, result)
    build_peers(float_path, calibration_images(case), work, result)
    measure_latency(float_path, result, runs, threads)
    if accuracy and case.eval_data is not None and result.calib_record is not None:
        measure_accuracy(float_path, result, threads)
    return result


# --- the section ------------------------------------------------------------------------------------

def render(results: list[Result], runs: int, threads: int, load: tuple[float, float]) -> str:
    import nncf
    import onnxruntime
    import openvino

    lines = [
        "## int8 against the peers: ONNX Runtime's quantize_static and NNCF, side by side",
        "",
        f"Regenerate: `python scripts/bench_int8_peers.py --runs {runs} --threads {threads}`. Machine: {machine()}, "
        f"{threads} threads, onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__.split('-')[0]}, "
        f"nncf {nncf.__version__}; load average {load[0]:.1f} before, {load[1]:.1f} after. Batch 1; p50 of {runs} "
        "runs in alternating blocks; ratio = int8 / the float ONNX on the same runtime in the same run. "
        "deploykit's column is its file for that runtime's device (`--device host-cpu-ort` on ONNX Runtime, "
        "`--device host-cpu-openvino` on OpenVINO). Peers get the same calibration images (all of deploykit's "
        "drawn set); see the script's docstring for their exact calls.",
        "",
        "| model | runtime | float ms | deploykit | ORT U8S8 | ORT S8S8 | NNCF | deploykit / best peer |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for runtime, p50 in r.latency.items():
            ratios = {t: p50[t] / p50["float"] for t in TOOLS if t in p50}
            peers = [ratios[t] for t in TOOLS[1:] if t in ratios]
            versus = f"{ratios['deploykit'] / min(peers):.2f}" if "deploykit" in ratios and peers else "n/a"
            cells = " | ".join(f"{ratios[t]:.2f}" if t in ratios else "n/a" for t in TOOLS)
            lines.append(f"| {r.case.model} | {runtime} | {p50['float']:.2f} | {cells} | {versus} |")
    lines += _accuracy_table(results) + _time_table(results)
    notes = [f"- {r.case.model}: {n}" for r in results for n in r.notes]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def _accuracy_table(results: list[Result]) -> list[str]:
    rows = [r for r in results if r.top1]
    if not rows:
        return []
    lines = ["", "Top-1 (%) of each file in each runtime (Δ against the float ONNX in parentheses):", "",
             "| model | images | runtime | float | deploykit | ORT U8S8 | ORT S8S8 | NNCF |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        for runtime, top1 in r.top1.items():
            cells = " | ".join(f"{100 * top1[t]:.2f} ({100 * (top1[t] - top1['float']):+.2f})" if t in top1
                               else "n/a" for t in TOOLS)
            lines.append(f"| {r.case.model} | {r.n_eval} | {runtime} | {100 * top1['float']:.2f} | {cells} |")
    return lines


def _time_table(results: list[Result]) -> list[str]:
    lines = ["", "Export time (s, wall; deploykit's includes its float export, gates, search and timing):", "",
             "| model | deploykit (ORT layout) | deploykit (OpenVINO layout) | ORT U8S8 | ORT S8S8 | NNCF |",
             "|---|---:|---:|---:|---:|---:|"]
    keys = ("deploykit (host-cpu-ort)", "deploykit (host-cpu-openvino)", "ORT U8S8", "ORT S8S8", "NNCF")
    for r in results:
        lines.append(f"| {r.case.model} | " + " | ".join(f"{r.seconds[k]:.1f}" if k in r.seconds else "n/a"
                                                          for k in keys) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--work", type=Path, help="keep artifacts and results here (default: a temp folder)")
    parser.add_argument("--latency-from", type=Path, help="time the artifacts a --work run kept, again")
    parser.add_argument("--update", type=Path, help="replace this section of a BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    before = os.getloadavg()[0]
    if args.latency_from:
        results = remeasure(args.latency_from, args.runs, args.threads)
    elif args.work:
        results = build_all(args, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-int8-peers-") as tmp:
            results = build_all(args, Path(tmp))
    text = render(results, args.runs, args.threads, (before, os.getloadavg()[0]))
    print(text)
    if args.update:
        update_section(args.update, "int8-peers", text)


def build_all(args, work: Path) -> list[Result]:
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.models.split(","):
        results.append(bench(CASES[name], runs=args.runs, threads=args.threads, accuracy=not args.skip_accuracy,
                             tmp=work))
        (work / "results.json").write_text(json.dumps([r.to_json() for r in results], indent=1))
    return results


def remeasure(work: Path, runs: int, threads: int) -> list[Result]:
    results = [Result.from_json(d) for d in json.loads((work / "results.json").read_text())]
    for result in results:
        for device in ("host-cpu-ort", "host-cpu-openvino"):
            if result.case.eval_data is None:  # a gated export of a random net may keep layers float: not speed
                speed_only_int8(result.case, device, work / result.case.model, result)
        measure_latency(result.files[("float", "")], result, runs, threads)
    return results


if __name__ == "__main__":
    main()
