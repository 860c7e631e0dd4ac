"""The sweep schema: a recipe whose one stage varies along axes, each combination a trial.

Pure data, like `core.recipe` (whose PassSpec, ProfileSpec and Thresholds it reuses); the registry checks
come through the same `context` callables (`deploykit.pipeline.sweep_spec.load_sweep` supplies them).

```yaml
name: resnet_cifar
model: resnet20_cifar           # the model of every trial, unless `sweep.model` varies it
weights: default                # per model: the zoo's released weights; or `random`
data: {eval: cifar10/test, limit: 1000, calib: cifar10/train}
devices: [host-cpu-ort, host-cpu-openvino]
profile: {runs: 30, warmup: 3, batches: [1]}
thresholds: {max_top1_drop: 0.02}
passes: [reparameterize, fold_bn]   # every trial's passes (the default); a prune ratio adds prune_channels
options: {opset: 17}                # every trial's export options
int8: {calib_method: minmax, per_channel: "on", calib_size: 384}   # the int8 trials' options
sweep:
  model: [resnet20_cifar, resnet32_cifar]
  prune: [0, 0.25]              # prune_channels ratio (0: not pruned)
  precision: [fp32, int8]       # int8 trials are laid out for each device's runtime (one artifact each)
  input_size: [160, 224]
  target: [onnx]
  exclude: [{model: resnet32_cifar, precision: int8}]   # combinations not to run
```
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from deploykit.core.config import ConfigNode, load_config
from deploykit.core.recipe import DEFAULT_WEIGHTS, RANDOM_WEIGHTS, PassSpec, ProfileSpec, _lookup, resolved_data
from deploykit.core.thresholds import Thresholds

AXES = ("model", "input_size", "prune", "precision", "target")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class SweepAxes:
    """Values per axis (None: the axis does not vary) and the combinations left out."""

    model: list[str] | None = None
    input_size: list[int] | None = None
    prune: list[float] | None = None
    precision: list[str] | None = None
    target: list[str] | None = None
    exclude: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for axis in AXES:
            values = getattr(self, axis)
            if values is not None and (not values or len(set(values)) != len(values)):
                raise ValueError(f"sweep.{axis}: give one or more distinct values")
        if any(not 0.0 <= r < 1.0 for r in self.prune or ()):
            raise ValueError("sweep.prune: ratios of channels removed, from 0 (not pruned) to below 1")
        if any(s <= 0 for s in self.input_size or ()):
            raise ValueError("sweep.input_size: sizes must be positive")
        bad = [p for p in self.precision or () if p not in PRECISIONS]
        if bad:
            raise ValueError(f"sweep.precision: {bad[0]!r} is not one of {', '.join(PRECISIONS)}")
        for rule in self.exclude:
            unknown = [k for k in rule if k not in AXES]
            if unknown or not rule:
                raise ValueError(f"sweep.exclude: {rule}: keys are axes ({', '.join(AXES)})")

    def varied(self) -> list[str]:
        return [axis for axis in AXES if getattr(self, axis) is not None]

    @classmethod
    def __from_yaml__(cls, node: ConfigNode) -> "SweepAxes":
        axes = node.convert_fields(cls)
        for i, name in enumerate(axes.model or ()):
            _lookup(node.child("model").child(i), "check_model", name)
        for i, name in enumerate(axes.target or ()):
            _lookup(node.child("target").child(i), "check_target", name)
        if not axes.varied():
            raise node.fail("a sweep needs at least one axis", fix=f"axes: {', '.join(AXES)}")
        return axes


@dataclass(frozen=True)
class SweepData:
    """As a recipe's `data`, plus `exclude_calib`: evaluate without the images int8 calibration may use
    (the `int8.calib_split` pool of `calib`), so that every trial, float or int8, is scored on the same
    images none of them saw."""

    eval: Path
    limit: int | None = None
    calib: Path | None = None
    exclude_calib: bool = False

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"limit must be positive, got {self.limit}")


@dataclass(frozen=True)
class SweepSpec:
    sweep: SweepAxes
    data: SweepData
    model: str | None = None
    weights: str = DEFAULT_WEIGHTS  # per model: "default" (the zoo's released weights), "random" or a path
    input_size: int | None = None
    num_classes: int | None = None
    devices: list[str] = field(default_factory=lambda: ["host-cpu-ort"])
    profile: ProfileSpec = field(default_factory=ProfileSpec)
    thresholds: Thresholds = field(default_factory=Thresholds)
    passes: list[PassSpec] | None = None  # None: reparameterize, fold_bn
    options: dict[str, Any] = field(default_factory=dict)
    int8: dict[str, Any] = field(default_factory=dict)
    prune: dict[str, Any] = field(default_factory=dict)  # prune_channels options besides the ratio
    name: str = ""

    def __post_init__(self) -> None:
        if self.model is None and self.sweep.model is None:
            raise ValueError("give `model`, or a `sweep.model` axis")
        if len(set(self.devices)) != len(self.devices) or not self.devices:
            raise ValueError("devices: one or more distinct device names")
        models = self.sweep.model or [self.model]
        if self.weights not in (DEFAULT_WEIGHTS, RANDOM_WEIGHTS) and len(models) > 1:
            raise ValueError("a weights path fits one model; with a model axis use `default` or `random`")
        if self.data.exclude_calib and self.int8.get("calib_split") is None:
            raise ValueError("data.exclude_calib leaves out the int8 calibration pool: set int8.calib_split")
        for key in ("int8", "precision", "device"):
            if key in self.options:
                raise ValueError(f"options.{key}: the precision axis sets it (int8 options go under `int8`)")
        if "ratio" in self.prune or "target_macs" in self.prune:
            raise ValueError("prune: the `sweep.prune` axis sets the ratio")

    @classmethod
    def __from_yaml__(cls, node: ConfigNode) -> "SweepSpec":
        spec = node.convert_fields(cls)
        if spec.model is not None:
            _lookup(node.child("model"), "check_model", spec.model)
        for i, device in enumerate(spec.devices):
            _lookup(node.child("devices").child(i), "check_device", device)
        return _resolved(spec, node)

    def models(self) -> list[str]:
        return list(self.sweep.model or [self.model])


def load_sweep_file(path: Path, context: Mapping[str, Callable] | None = None) -> SweepSpec:
    spec = load_config(Path(path), SweepSpec, context=context)
    return spec if spec.name else dataclasses.replace(spec, name=Path(path).stem)


def _resolved(spec: SweepSpec, node: ConfigNode) -> SweepSpec:
    """Data paths and a weights path made absolute by context["resolve_path"], errors at their lines."""
    if "resolve_path" not in node.context:
        return spec
    data = resolved_data(spec.data, node.child("data"))
    weights = spec.weights
    if weights not in (DEFAULT_WEIGHTS, RANDOM_WEIGHTS):
        weights = str(_lookup(node.child("weights"), "resolve_path", Path(weights)))
    return dataclasses.replace(spec, data=data, weights=weights)


__all__ = ["AXES", "PRECISIONS", "SweepAxes", "SweepData", "SweepSpec", "load_sweep_file"]
