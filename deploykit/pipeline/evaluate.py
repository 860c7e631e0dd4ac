"""What to evaluate -> a predict function and its preprocessing -> accuracy on a dataset.

A zoo name runs the float PyTorch model (default weights from the shared data folder when the zoo
knows them); an `.onnx` file runs in ONNX Runtime or OpenVINO (`runtimes.load`, like every artifact) with
the preprocessing from its manifest, or, for an outside model without one, from explicit options. Either
way the pixels go through the one implementation in `deploykit.data.preprocess`, and accuracy is counted by
`deploykit.profile.accuracy`."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from deploykit import runtimes, zoo
from deploykit.core.devices import DEFAULT_THREADS, host_device
from deploykit.core.errors import DeployKitError
from deploykit.core.manifest import MANIFEST_SUFFIX, manifest_path, verified_manifest
from deploykit.core.paths import data_dir
from deploykit.core.preprocess import Preprocess
from deploykit.data.datasets import Dataset, open_dataset
from deploykit.data.loader import DEFAULT_SEED, batches, sample_indices
from deploykit.profile.accuracy import EvalResult, Predict, Progress, accuracy

ARTIFACT_SUFFIXES = (".onnx",)


@dataclass(frozen=True)
class PreprocessOptions:
    """Preprocessing for an ONNX file that has no manifest; None means "infer or default"."""

    size: int | None = None
    resize: int | None = None
    interpolation: str | None = None
    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    grayscale: bool = False

    def given(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) not in (None, False)]


@dataclass(frozen=True)
class EvalRequest:
    target: str  # a zoo model name or an artifact path
    data: Path
    weights: Path | None = None
    limit: int | None = None
    batch_size: int = 32
    seed: int = 0
    threads: int = DEFAULT_THREADS
    options: PreprocessOptions = field(default_factory=PreprocessOptions)
    exclude_calib: Path | None = None  # an artifact (or its manifest) whose calibration images to leave out
    runtime: str = "onnxruntime"  # for .onnx artifacts: onnxruntime or openvino


@dataclass
class Evaluable:
    """A ready-to-run model: its predict function, its preprocessing and how to name it."""

    predict: Predict
    preprocess: Preprocess
    description: str
    warnings: list[str] = field(default_factory=list)


@dataclass
class EvalOutcome:
    result: EvalResult
    preprocess: Preprocess
    description: str
    data: Path
    warnings: list[str] = field(default_factory=list)


def run_eval(request: EvalRequest, progress: Progress | None = None) -> EvalOutcome:
    """Open the data first (cheap, and the commonest mistake), then load the model and evaluate."""
    data = resolve_data(request.data)
    dataset = open_dataset(data)
    description_note = ""
    if request.exclude_calib is not None:
        from deploykit.data.calibration import exclude_calibration

        dataset, note = exclude_calibration(dataset, data, calibration_record(Path(request.exclude_calib)))
        description_note = f" ({note})"
    model = resolve_model(request)
    result = evaluate(model.predict, dataset, model.preprocess, limit=request.limit, seed=request.seed,
                      batch_size=request.batch_size, progress=progress, workers=request.threads)
    return EvalOutcome(result, model.preprocess, model.description + description_note, data, model.warnings)


def evaluate(predict: Predict, dataset: Dataset, preprocess: Preprocess, *, limit: int | None = None,
             batch_size: int = 32, progress: Progress | None = None, seed: int = DEFAULT_SEED,
             workers: int = DEFAULT_THREADS) -> EvalResult:
    """Accuracy of `predict` (NCHW float32 -> logits N x classes) on `dataset` (or a seeded subset of `limit`)."""
    total = len(sample_indices(len(dataset), limit, seed))
    stream = batches(dataset, preprocess, batch_size, limit=limit, seed=seed, workers=workers)
    return accuracy(predict, stream, total=total, progress=progress)


def calibration_record(path: Path) -> dict:
    """The calibration record of an int8 artifact, from the artifact's manifest (or the manifest itself)."""
    artifact = path.with_name(path.name.removesuffix(MANIFEST_SUFFIX))
    manifest = verified_manifest(artifact)
    if manifest is None:
        raise DeployKitError(f"--exclude-calib: no manifest at {manifest_path(artifact)}",
                             fix="pass the int8 artifact that `deploykit export --int8` wrote, or its manifest")
    record = manifest.extra.get("int8", {}).get("calibration")
    if record is None:
        raise DeployKitError(f"--exclude-calib: {manifest.artifact} was not calibrated on images "
                             "(its manifest has no int8 calibration record)", fix="drop --exclude-calib")
    return record


def resolve_data(path: Path) -> Path:
    """`path` as given, else relative to the shared data folder (`--data mnist`)."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    shared = data_dir() / path
    if shared.exists():
        return shared
    raise DeployKitError(f"dataset not found: {path} (nor {shared})", fix="check the --data path")


def resolve_model(request: EvalRequest) -> Evaluable:
    target = request.target
    from deploykit.pipeline.evaluate_edge import edge_evaluable, is_edge_artifact

    if is_edge_artifact(target):
        if request.weights is not None:
            raise DeployKitError("--weights applies only to zoo models", fix="drop it: the artifact holds its weights")
        return edge_evaluable(Path(target), request.options, threads=request.threads, runtime=request.runtime)
    if target.endswith(ARTIFACT_SUFFIXES) or Path(target).is_file():
        if request.weights is not None:
            raise DeployKitError("--weights applies only to zoo models", fix="drop it: the artifact holds its weights")
        return onnx_evaluable(Path(target), request.options, threads=request.threads, runtime=request.runtime)
    if request.runtime != "onnxruntime":
        raise DeployKitError(f"--runtime {request.runtime} runs .onnx artifacts",
                             fix=f"drop it: {target} runs in PyTorch")
    if request.options.given():
        raise DeployKitError(f"--{request.options.given()[0]} applies only to an ONNX file without a manifest",
                             fix=f"drop it: {target}'s preprocessing comes from the zoo")
    return zoo_evaluable(target, request.weights, threads=request.threads)


# --- ONNX artifacts -------------------------------------------------------------------------------

RUNTIMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO (f32 hint)"}


def onnx_evaluable(path: Path, options: PreprocessOptions, *, threads: int,
                   runtime: str = "onnxruntime") -> Evaluable:
    if path.suffix not in ARTIFACT_SUFFIXES or not path.is_file():
        what = "not found" if not path.exists() else "not an ONNX file"
        raise DeployKitError(f"artifact {what}: {path}", fix="pass a zoo model name or an .onnx file")
    if runtime not in RUNTIMES:
        raise DeployKitError(f"unknown --runtime {runtime!r}", fix=f"one of {', '.join(RUNTIMES)}")
    runnable = runtimes.load(path, host_device(runtime, threads))  # fp32: OpenVINO's f32 hint, int8 stays int8
    preprocess, origin, warnings = artifact_preprocess(path, options, runtimes.onnx_input_shape(path))
    static = runnable.static_batch
    batch_note = f"static batch {static}" if static else "dynamic batch"
    return Evaluable(runtimes.predictor(runnable), preprocess, f"{path.name} in {RUNTIMES[runtime]} ({batch_note}; "
                     f"preprocessing {origin})", warnings)


def artifact_preprocess(path: Path, options: PreprocessOptions, shape: list) -> tuple[Preprocess, str, list]:
    """(preprocessing, where it came from, warnings): the manifest's when there is one."""
    manifest = verified_manifest(path)  # an artifact its manifest does not describe is refused here
    if manifest is None:
        return options_preprocess(options, shape), "from options", []
    manifest_file = manifest_path(path)
    if options.given():
        raise DeployKitError(f"--{options.given()[0]} conflicts with {manifest_file.name}",
                             fix="drop the preprocessing options: the manifest records how it was exported")
    preprocess = manifest.preprocessing()
    warnings = []
    if manifest.weights_sha256 == "random-init":
        warnings.append(f"{path.name} was exported from a random init: expect chance-level accuracy")
    return preprocess, f"from {manifest_file.name}", warnings


def options_preprocess(options: PreprocessOptions, input_shape: list) -> Preprocess:
    """Preprocessing for an outside ONNX file: options first, then the graph's declared input shape;
    defaults are no resize, pixels scaled to [0, 1], mean 0 and std 1."""
    declared = [d if isinstance(d, int) else None for d in (list(input_shape) + [None] * 4)[:4]]
    channels = _channels(options.grayscale, declared[1])
    n = 1 if channels == "L" else 3
    return Preprocess(
        input_size=options.size or _declared_size(declared), resize=options.resize,
        interpolation=options.interpolation or "bilinear", channels=channels,
        scale=1.0 / 255.0 if options.scale is None else options.scale,
        mean=_per_channel(options.mean, n, 0.0, "mean"), std=_per_channel(options.std, n, 1.0, "std"),
    )


def _channels(grayscale: bool, declared: int | None) -> str:
    if grayscale and declared not in (None, 1):
        raise DeployKitError(f"--grayscale gives 1 channel but the model takes {declared}",
                             fix="drop --grayscale")
    return "L" if grayscale or declared == 1 else "RGB"


def _declared_size(declared: list) -> int:
    height, width = declared[2], declared[3]
    if height is None or height != width:
        raise DeployKitError(f"cannot tell a square input size from the model's input shape {declared}",
                             fix="pass --size")
    return height


def _per_channel(values: tuple[float, ...] | None, n: int, default: float, name: str) -> tuple[float, ...]:
    if values is None:
        return (default,) * n
    if len(values) == 1:
        return tuple(values) * n
    if len(values) != n:
        raise DeployKitError(f"--{name} has {len(values)} values for {n}-channel input",
                             fix=f"give 1 or {n} comma-separated values")
    return tuple(values)


# --- zoo models in PyTorch ------------------------------------------------------------------------

def zoo_evaluable(name: str, weights: Path | None, *, threads: int) -> Evaluable:
    from deploykit.runtimes.torch import TorchModel

    entry = zoo.get(name)
    model, source, warnings = load_zoo_model(name, weights)
    return Evaluable(TorchModel(model, threads=threads).run, entry.preprocess, f"{name} in PyTorch ({source})",
                     warnings)


def load_zoo_model(name: str, weights: Path | None):
    """(model, where its weights came from, warnings): `weights` in any checkpoint layout the zoo knows for
    the family, else the zoo's released weights, else a random init; the same loader export uses."""
    from deploykit.pipeline.weights import load_model

    loaded = load_model(name, weights)  # a pruned checkpoint is thinned to its stored layer widths first
    if loaded.path is None:
        warning = f"no weights for {name}: evaluating a random init (pass --weights)"
        return loaded.model, "random init", [warning]
    source = loaded.path.name if weights is not None else "the zoo's default weights"
    return loaded.model, source + (", deploy form" if loaded.form == "deploy" else ""), list(loaded.warnings)
