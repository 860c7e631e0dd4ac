"""`deploykit eval` on the on-device CPU artifacts: a `.tflite` in LiteRT, a `.pte` in ExecuTorch, both on
XNNPACK with the eval's threads, preprocessing from the artifact's manifest (or the preprocessing options
for a file without one), so the accuracy is the one the phone's kernels give."""

from __future__ import annotations

from pathlib import Path

from deploykit.core.errors import DeployKitError
from deploykit.pipeline.evaluate import Evaluable, PreprocessOptions, artifact_preprocess

EDGE_RUNTIMES = {".tflite": ("litert", "LiteRT (XNNPACK)"), ".pte": ("executorch", "ExecuTorch (XNNPACK)")}


def is_edge_artifact(target: str) -> bool:
    return Path(target).suffix in EDGE_RUNTIMES


def edge_evaluable(path: Path, options: PreprocessOptions, *, threads: int, runtime: str) -> Evaluable:
    from deploykit import runtimes
    from deploykit.core.devices import host_device

    name, label = EDGE_RUNTIMES[path.suffix]
    if runtime not in ("onnxruntime", name):  # onnxruntime: the option's default, i.e. not given
        raise DeployKitError(f"--runtime {runtime} does not run {path.suffix} files",
                             fix=f"drop --runtime: {path.name} runs in {label}")
    if not path.is_file():
        raise DeployKitError(f"artifact not found: {path}", fix="pass the path of an exported artifact")
    runnable = runtimes.load(path, host_device(name, threads))
    shape = [runnable.static_batch, None, None, None]
    preprocess, origin, warnings = artifact_preprocess(path, options, shape)
    description = (f"{path.name} in {label} ({threads} threads, static batch {runnable.static_batch}, ran "
                   f"{runnable.precision_used}; preprocessing {origin})")
    return Evaluable(runtimes.predictor(runnable), preprocess, description, warnings)
