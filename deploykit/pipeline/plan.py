"""A recipe as a plan: every stage's export request and every measurement, each with its full cache
key, before anything runs. `deploykit run --dry-run` prints it; `run` executes it.

A key is the sha256 of the canonical JSON of everything that can change the result: the model, the
weights' content hash, the passes with their configs, the target and its options (a calibration
folder by the content hash of its files), the tool versions and deploykit's own source. A measurement
is keyed by the artifact's sha256, the device's profile, the evaluation data's content hash and the
profiling settings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from deploykit.core.devices import Device, load_device
from deploykit.core.digest import sha256_json
from deploykit.core.errors import DeployKitError
from deploykit.core.manifest import tool_versions
from deploykit.core.recipe import FLOAT_STAGE, PATH_OPTIONS, RANDOM_WEIGHTS, PassSpec, Recipe, Stage
from deploykit.pipeline.cache import CachedArtifact, PipelineCache
from deploykit.pipeline.recipe import PRUNE_PASS, REQUEST_OPTIONS

CACHE_FORMAT = 1  # bump when the meaning of a cached file changes
FINETUNE_OPTIONS = tuple(o for o in REQUEST_OPTIONS if o.startswith("finetune_"))
CALIB_READERS = ("calib",)  # options that take the recipe's `data.calib` when the stage does not set them
# Which artifacts a runtime runs, by the target that made them.
RUNTIME_TARGETS = {"onnxruntime": ("onnx",), "openvino": ("onnx",), "coreml": ("coreml",),
                   "tensorrt": ("tensorrt",), "torch": (), "litert": ("litert",), "executorch": ("executorch",)}


@dataclass(frozen=True)
class ArtifactStep:
    stage: str
    parent: str
    passes: tuple[PassSpec, ...]
    target: str
    options: dict  # as the export gets them (paths absolute)
    batch: int
    key: str
    inputs: dict  # what the key hashes
    cached: CachedArtifact | None

    @property
    def reused(self) -> bool:
        return self.cached is not None


@dataclass(frozen=True)
class MeasureStep:
    stage: str
    device: str
    key: str | None  # None until the artifact exists (the key holds its sha256)
    reused: bool
    skip: str | None = None  # why it does not run here


@dataclass(frozen=True)
class Plan:
    recipe: Recipe
    recipe_path: Path
    recipe_sha256: str
    cache: PipelineCache
    tools: dict
    weights: Path  # the file every stage starts from (a seeded random init is saved in the cache)
    weights_sha256: str
    data_sha256: str
    calib_sha256: str | None
    devices: dict[str, Device]
    reference: MeasureStep  # the float training form on the host, in PyTorch
    artifacts: list[ArtifactStep]
    measures: list[MeasureStep] = field(default_factory=list)

    def step(self, stage: str) -> ArtifactStep:
        return next(s for s in self.artifacts if s.stage == stage)

    def to_dict(self) -> dict:
        return {
            "recipe": str(self.recipe_path), "recipe_sha256": self.recipe_sha256,
            "cache": str(self.cache.root), "model": self.recipe.model, "weights": str(self.weights),
            "weights_sha256": self.weights_sha256, "data_sha256": self.data_sha256,
            "calib_sha256": self.calib_sha256, "tools": self.tools,
            "reference": _measure_dict(self.reference),
            "stages": [{"stage": s.stage, "parent": s.parent,
                        "passes": [[p.name, p.config_dict()] for p in s.passes], "target": s.target,
                        "options": {k: str(v) for k, v in s.options.items()}, "batch": s.batch,
                        "key": s.key, "reused": s.reused} for s in self.artifacts],
            "measurements": [_measure_dict(m) for m in self.measures],
        }


def _measure_dict(m: MeasureStep) -> dict:
    return {"stage": m.stage, "device": m.device, "key": m.key, "reused": m.reused, "skip": m.skip}


def make_plan(recipe: Recipe, recipe_path: Path, cache: PipelineCache, *,
              select_devices: list[str] | None = None) -> Plan:
    """The plan for `recipe`: hashes its inputs and looks up what the cache already holds."""
    tools = tool_fingerprint()
    weights = random_weights(recipe, cache) if recipe.weights == RANDOM_WEIGHTS else Path(recipe.weights)
    weights_sha = cache.digest(weights)
    data_sha = cache.digest(recipe.data.eval)
    calib_sha = cache.digest(recipe.data.calib) if recipe.data.calib else None
    devices = {name: load_device(name) for name in recipe.devices}
    chosen = _selected(recipe, select_devices)
    artifacts = _artifact_steps(recipe, cache, tools, weights_sha, calib_sha)
    reference = _reference_step(recipe, cache, tools, weights_sha, data_sha)
    measures = [_measure_step(recipe, cache, step, devices[d], chosen, data_sha, reference.key, tools)
                for step in artifacts for d in recipe.devices if _runs(devices[d], step.target)]
    return Plan(recipe, Path(recipe_path), hashlib.sha256(Path(recipe_path).read_bytes()).hexdigest(), cache,
                tools, weights, weights_sha, data_sha, calib_sha, devices, reference, artifacts, measures)


def random_weights(recipe: Recipe, cache: PipelineCache, seed: int = 0) -> Path:
    """A random init of the recipe's model, seeded and saved once, so that every stage (and the float
    original that profiling compares with) starts from the same weights."""
    import torch

    from deploykit import zoo
    from deploykit.pipeline.finetune import save_weights
    from deploykit.training.seeding import seeded

    classes = recipe.num_classes or zoo.get(recipe.model).num_classes
    name = f"{recipe.model}-{classes}cls-random-seed{seed}-torch{torch.__version__}.safetensors"
    path = cache.root / "weights" / name
    if not path.is_file():
        with seeded(seed):
            model = zoo.create(recipe.model, num_classes=recipe.num_classes)
        save_weights(path, model, {"deploykit_random_init": str(seed)})
    return path


def tool_fingerprint() -> dict:
    """Installed tool versions plus the sha256 of deploykit's own source (an edited pass is a new tool)."""
    return {**tool_versions(), "deploykit_source": source_digest()}


def source_digest() -> str:
    """sha256 of the package's source outside the CLI layer (which only presents results)."""
    root = Path(__file__).resolve().parents[1]  # the deploykit package
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*.py") if p.relative_to(root).parts[0] != "cli"):
        digest.update(f"{path.relative_to(root).as_posix()}\0".encode() + path.read_bytes() + b"\n")
    return digest.hexdigest()


def _selected(recipe: Recipe, select: list[str] | None) -> set[str] | None:
    if not select:
        return None
    unknown = [d for d in select if d not in recipe.devices]
    if unknown:
        raise DeployKitError(f"--device {unknown[0]} is not one of the recipe's devices "
                             f"({', '.join(recipe.devices)})",
                             fix="add it to the recipe's `devices`, or choose a listed one")
    return set(select)


def _runs(device: Device, target: str) -> bool:
    return target in RUNTIME_TARGETS.get(device.runtime, ())


# --- artifacts ------------------------------------------------------------------------------------

def _artifact_steps(recipe: Recipe, cache: PipelineCache, tools: dict, weights_sha: str,
                    calib_sha: str | None) -> list[ArtifactStep]:
    steps: dict[str, ArtifactStep] = {}
    previous = FLOAT_STAGE
    for stage in recipe.stages:
        parent = stage.parent or previous
        passes = (steps[parent].passes if parent in steps else ()) + tuple(stage.passes)
        _check_passes(stage, passes)
        steps[stage.name] = _artifact_step(recipe, stage, parent, passes, cache, tools, weights_sha,
                                           calib_sha)
        previous = stage.name
    return list(steps.values())


def _check_passes(stage: Stage, passes: tuple[PassSpec, ...]) -> None:
    prunes = sum(p.name == PRUNE_PASS for p in passes)
    if prunes > 1:
        raise DeployKitError(f"stage {stage.name}: {PRUNE_PASS} appears {prunes} times in its passes "
                             "(with its parents')", fix="prune once, with the ratio you want")
    finetune = [k for k in FINETUNE_OPTIONS if k in stage.options]
    if finetune and not prunes:
        raise DeployKitError(f"stage {stage.name}: option {finetune[0]} applies to a {PRUNE_PASS} stage",
                             fix=f"add {PRUNE_PASS} to the stage's passes, or drop the option")


def _artifact_step(recipe: Recipe, stage: Stage, parent: str, passes: tuple[PassSpec, ...],
                   cache: PipelineCache, tools: dict, weights_sha: str,
                   calib_sha: str | None) -> ArtifactStep:
    options = {k: v for k, v in stage.options.items() if k != "batch"}
    if recipe.data.calib is not None and _reads_calib(stage):
        options = {**options, **{k: recipe.data.calib for k in CALIB_READERS if k not in options}}
    batch = int(stage.options.get("batch", 1))
    inputs = {
        "what": "artifact", "format": CACHE_FORMAT, "model": recipe.model, "num_classes": recipe.num_classes,
        "input_size": recipe.input_size, "weights_sha256": weights_sha,
        "passes": [[p.name, p.config_dict()] for p in passes], "target": stage.target, "batch": batch,
        "options": {k: _option_key(k, v, cache, recipe, calib_sha) for k, v in sorted(options.items())},
        "tools": tools,
    }
    key = sha256_json(inputs)
    return ArtifactStep(stage.name, parent, passes, stage.target, options, batch, key, inputs,
                        cache.artifact(key))


def _reads_calib(stage: Stage) -> bool:
    from deploykit.pipeline.recipe import target_options

    return any(k in target_options(stage.target) for k in CALIB_READERS) and _wants_calib(stage)


def _wants_calib(stage: Stage) -> bool:
    """Calibration data matters to int8 and to the fp16 range scans of Core ML and TensorRT."""
    return bool(stage.options.get("int8")) or stage.target in ("coreml", "tensorrt")


def _option_key(name: str, value: object, cache: PipelineCache, recipe: Recipe,
                calib_sha: str | None) -> object:
    if name not in PATH_OPTIONS or value is None:
        return value
    if calib_sha is not None and Path(value) == recipe.data.calib:
        return {"sha256": calib_sha}
    return {"sha256": cache.digest(Path(value))}


# --- measurements ---------------------------------------------------------------------------------

def _data_inputs(recipe: Recipe, data_sha: str) -> dict:
    return {"sha256": data_sha, "limit": recipe.data.limit}


def _reference_step(recipe: Recipe, cache: PipelineCache, tools: dict, weights_sha: str,
                    data_sha: str) -> MeasureStep:
    key = sha256_json({"what": "reference", "format": CACHE_FORMAT, "model": recipe.model,
                       "num_classes": recipe.num_classes, "input_size": recipe.input_size,
                       "weights_sha256": weights_sha, "data": _data_inputs(recipe, data_sha), "tools": tools})
    return MeasureStep(FLOAT_STAGE, "host (PyTorch)", key, reusable(cache.measurement(key)))


def measure_key(recipe: Recipe, artifact_sha: str, device: Device, data_sha: str, reference_key: str,
                tools: dict) -> str:
    profile = recipe.profile
    return sha256_json({"what": "measurement", "format": CACHE_FORMAT, "artifact_sha256": artifact_sha,
                        "device": device.to_dict(), "data": _data_inputs(recipe, data_sha),
                        "profile": {"runs": profile.runs, "warmup": profile.warmup,
                                    "batches": profile.batches or device.batches},
                        "reference": reference_key, "tools": tools})


def _measure_step(recipe: Recipe, cache: PipelineCache, step: ArtifactStep, device: Device,
                  chosen: set[str] | None, data_sha: str, reference_key: str, tools: dict) -> MeasureStep:
    skip = None
    if chosen is not None and device.name not in chosen:
        skip = "not selected (--device)"
    elif chosen is None and not device.is_local:
        skip = "remote device: select it with --device to profile there"
    if step.cached is None:
        return MeasureStep(step.stage, device.name, None, False, skip)
    key = measure_key(recipe, step.cached.sha256, device, data_sha, reference_key, tools)
    return MeasureStep(step.stage, device.name, key, reusable(cache.measurement(key)), skip)


def reusable(record: dict | None) -> bool:
    """A cached measurement served whole. One whose latency was unstable is timed again (its accuracy, which
    does not depend on the machine's load, is kept): see pipeline.run."""
    return record is not None and not record["measurement"].get("latency_unstable", False)
