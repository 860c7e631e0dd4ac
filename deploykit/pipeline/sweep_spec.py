"""A sweep spec -> its trials -> one recipe per artifact, for the ordinary pipeline (plan, cache, export).

A trial is one combination of the axes. Its artifact is a one-stage recipe, so its cache key is the one
`deploykit run` would compute for the same stage: a sweep and a recipe share what they built. An int8
trial is laid out for each runtime among the sweep's devices (ONNX Runtime and OpenVINO want different
QDQ layouts), so it has one artifact per runtime; a float trial has one for all devices.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from deploykit.core.devices import Device, load_device
from deploykit.core.errors import DeployKitError
from deploykit.core.recipe import DataSpec, PassSpec, Recipe, Stage
from deploykit.core.sweep import AXES, SweepSpec, load_sweep_file
from deploykit.pipeline.plan import RUNTIME_TARGETS
from deploykit.pipeline.recipe import (PRUNE_PASS, check_device, default_weights, pass_config_type, resolve_path,
                                       target_options)

DEPLOY_PASSES = ("reparameterize", "fold_bn")
DEFAULTS = {"prune": 0.0, "precision": "fp32", "target": "onnx"}


@dataclass(frozen=True)
class Trial:
    name: str  # e.g. "resnet20_cifar-prune0_25-int8": the model, then the varied axes
    model: str
    input_size: int | None
    prune: float
    precision: str
    target: str

    def values(self) -> dict:
        return {axis: getattr(self, axis) for axis in AXES}


def load_sweep(path: Path) -> SweepSpec:
    """The validated spec at `path`: names checked against their registries, paths made absolute."""
    from deploykit import zoo
    from deploykit.pipeline.targets import get_target

    base = Path(path).resolve().parent
    context = {"check_model": zoo.get, "pass_config_type": pass_config_type, "check_device": check_device,
               "check_target": get_target, "resolve_path": lambda value: resolve_path(value, base)}
    return load_sweep_file(Path(path), context)


def expand(spec: SweepSpec) -> list[Trial]:
    """Every combination of the axes in order (the first axis varies slowest), less the excluded ones."""
    axes = {axis: getattr(spec.sweep, axis) or [_default(spec, axis)] for axis in AXES}
    trials = []
    for combo in itertools.product(*axes.values()):
        values = dict(zip(AXES, combo))
        if not any(_matches(rule, values) for rule in spec.sweep.exclude):
            trials.append(Trial(_name(spec, values), **values))
    if not trials:
        raise DeployKitError("the sweep's `exclude` rules leave no trial", fix="loosen sweep.exclude")
    return trials


def _default(spec: SweepSpec, axis: str):
    return {"model": spec.model, "input_size": spec.input_size}.get(axis, DEFAULTS.get(axis))


def _matches(rule: dict, values: dict) -> bool:
    return all(values[axis] == value for axis, value in rule.items())


def _name(spec: SweepSpec, values: dict) -> str:
    parts = [values["model"]]
    for axis in spec.sweep.varied():
        value = values[axis]
        if axis == "model":
            continue
        label = f"in{value}" if axis == "input_size" else f"prune{value:g}" if axis == "prune" else str(value)
        parts.append(label.replace(".", "_"))
    return "-".join(parts)


# --- devices and layouts --------------------------------------------------------------------------

def sweep_devices(spec: SweepSpec) -> dict[str, Device]:
    return {name: load_device(name) for name in spec.devices}


def runs_target(device: Device, target: str) -> bool:
    return target in RUNTIME_TARGETS.get(device.runtime, ())


def layouts(trial: Trial, devices: dict[str, Device]) -> dict[str | None, list[str]]:
    """Artifact layout -> the devices measuring it. Float: one artifact (key None) for every device that
    runs the target. int8: one per runtime, made for the first device of that runtime."""
    able = [name for name, device in devices.items() if runs_target(device, trial.target)]
    if trial.precision != "int8":
        return {None: able} if able else {}
    by_runtime: dict[str, list[str]] = {}
    for name in able:
        by_runtime.setdefault(devices[name].runtime, []).append(name)
    return {names[0]: names for names in by_runtime.values()}


# --- one recipe per artifact ----------------------------------------------------------------------

def trial_recipe(spec: SweepSpec, trial: Trial, layout_device: str | None) -> Recipe:
    """The one-stage recipe that builds `trial`'s artifact (for `layout_device`'s runtime when int8)."""
    options = {**spec.options, **_precision_options(spec, trial, layout_device)}
    unknown = sorted(set(options) - target_options(trial.target))
    if unknown:
        raise DeployKitError(f"target {trial.target} takes no option {unknown[0]!r}",
                             fix=f"drop {trial.target} or {trial.precision} from the sweep, or exclude the pair")
    stage = Stage(name=trial.name, passes=_passes(spec, trial), target=trial.target, options=options)
    data = DataSpec(eval=spec.data.eval, limit=spec.data.limit, calib=spec.data.calib)
    return Recipe(model=trial.model, stages=[stage], data=data, weights=_weights(spec, trial.model),
                  input_size=trial.input_size, num_classes=spec.num_classes, devices=list(spec.devices),
                  profile=spec.profile, thresholds=spec.thresholds, name=f"{spec.name}/{trial.name}")


def _precision_options(spec: SweepSpec, trial: Trial, layout_device: str | None) -> dict:
    if trial.precision == "int8":
        if spec.data.calib is None:
            raise DeployKitError("int8 trials need calibration images", fix="set data.calib in the sweep")
        flag = {"int8": True} if trial.target == "onnx" else {"precision": "int8"}  # the pipeline's two spellings
        return {**flag, "device": layout_device, "time_on_device": False, **spec.int8}
    if trial.precision == "fp32" and trial.target == "onnx":
        return {}  # what a recipe's plain ONNX stage has: the sweep and `deploykit run` share the artifact
    return {"precision": trial.precision}


def _passes(spec: SweepSpec, trial: Trial) -> list[PassSpec]:
    base = spec.passes if spec.passes is not None else [PassSpec(n, pass_config_type(n)()) for n in DEPLOY_PASSES]
    if trial.prune == 0:
        return list(base)
    try:
        config = pass_config_type(PRUNE_PASS)(ratio=trial.prune, **spec.prune)
    except (TypeError, ValueError, DeployKitError) as exc:
        raise DeployKitError(f"prune: {getattr(exc, 'message', exc)}", fix="check the sweep's `prune` options") from exc
    return [PassSpec(PRUNE_PASS, config)] + list(base)


def _weights(spec: SweepSpec, model: str) -> str:
    if spec.weights == "default":
        return str(default_weights(model))
    return spec.weights


__all__ = ["Trial", "expand", "layouts", "load_sweep", "runs_target", "sweep_devices", "trial_recipe"]
