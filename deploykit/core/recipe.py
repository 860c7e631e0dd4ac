"""The recipe schema: one YAML file says which model, which stages, which devices and what must hold.

Pure data. Names that need a registry (models, passes, targets, devices) are checked through
callables in the `context` of `load_recipe`, so this module imports no torch; the pipeline layer
supplies them (`deploykit.pipeline.recipe.load_recipe`). Every error names the key and the line.

```yaml
model: resnet56_cifar
weights: default             # the zoo's released weights (the default); `random` for a seeded random
                             # init; or a path (absolute, beside the recipe, or under the data folder)
data: {eval: cifar10/test, limit: 1000, calib: cifar10/train}
devices: [host]              # devices/*.yaml names; remote ones are profiled only when selected
profile: {runs: 50, warmup: 5, batches: [1]}
thresholds:                  # for every stage, against the float training form on `data.eval`
  max_top1_drop: 0.005       # fractions: 0.005 = half a point of top-1
  min_agreement: 0.99        # same top-1 class as the float model
  max_latency_ms: {host: 40} # p50 at the first profile batch, per device
stages:                      # passes accumulate down the list (or from `parent`); target and options
  - name: folded             # are the stage's own
    passes: [reparameterize, fold_bn]
  - name: pruned
    passes: [{prune_channels: {ratio: 0.3}}]
    options: {finetune_data: cifar10/train, finetune_epochs: 3}
  - name: int8
    parent: folded
    options: {int8: true}
    thresholds: {max_top1_drop: 0.02, min_agreement: 0.95}
  - name: coreml
    target: coreml
    options: {precision: fp16}
```
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from deploykit.core.config import ConfigError, ConfigNode, load_config
from deploykit.core.errors import DeployKitError
from deploykit.core.thresholds import Thresholds

PATH_OPTIONS = ("calib", "finetune_data")  # stage options that name files or folders
FLOAT_STAGE = "float"  # the implicit first stage: the training form in PyTorch, the reference
DEFAULT_WEIGHTS = "default"
RANDOM_WEIGHTS = "random"  # a seeded random init, saved once in the cache so every stage shares it


@dataclass(frozen=True)
class PassSpec:
    """One pass and its validated, frozen config (an instance of the pass's registered config type).

    YAML: `fold_bn` or `{prune_channels: {ratio: 0.3}}`."""

    name: str
    config: Any = None

    @classmethod
    def __from_yaml__(cls, node: ConfigNode) -> "PassSpec":
        if not node.is_mapping:
            name, config_node = node.scalar(), None
            if not isinstance(name, str):
                raise node.fail(f"expected a pass name, got {name!r}")
        else:
            items = node.items()
            if len(items) != 1:
                raise node.fail("a pass is `name` or `{name: {option: value}}`, one per list item")
            name, config_node = items[0]
        config_type = _lookup(node, "pass_config_type", name)
        if config_type is None:
            return cls(name, None)
        if config_node is not None and not config_node.is_null():
            return cls(name, config_node.convert(config_type))
        try:
            return cls(name, config_type())
        except DeployKitError as exc:  # a pass whose config has required options
            raise node.fail(f"pass {name!r} needs options: {exc.message}", exc.fix) from None
        except (TypeError, ValueError) as exc:
            raise node.fail(f"pass {name!r} needs options: {exc}") from None

    def config_dict(self) -> dict:
        return {} if self.config is None else dataclasses.asdict(self.config)


@dataclass(frozen=True)
class Stage:
    """A model form and the artifact made from it. `passes` add to those of its parent (the stage above,
    or the one `parent` names); `target` and `options` (the export's options: opset, precision, int8,
    finetune_data, ...) are its own. `prune_channels` always runs first, on the training form."""

    name: str
    passes: list[PassSpec] = field(default_factory=list)
    target: str = "onnx"
    options: dict[str, Any] = field(default_factory=dict)
    thresholds: Thresholds | None = None
    parent: str | None = None  # the stage whose passes this one starts from; None: the one above

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"stage name {self.name!r}: use letters, digits, '-' and '_'")
        if self.name == FLOAT_STAGE:
            raise ValueError(f"{FLOAT_STAGE!r} is the implicit first stage (the training form); "
                             "choose another name")

    @classmethod
    def __from_yaml__(cls, node: ConfigNode) -> "Stage":
        stage = node.convert_fields(cls)
        allowed = _lookup(node.child("target"), "target_options", stage.target)
        if allowed is not None and _has(node, "options"):
            for key, value_node in node.child("options").items():
                if key not in allowed:
                    raise value_node.key_fail(f"target {stage.target!r} takes no option {key!r}",
                                              fix=f"its options: {', '.join(sorted(allowed))}")
        return _resolved_options(stage, node)


@dataclass(frozen=True)
class DataSpec:
    """Data paths: as given, beside the recipe, or under the shared data folder."""

    eval: Path  # labelled images: accuracy and agreement
    limit: int | None = None  # a seeded subset of `eval` (the same images for every stage)
    calib: Path | None = None  # calibration images for int8 stages (option `calib` filled in from here)

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"limit must be positive, got {self.limit}")


@dataclass(frozen=True)
class ProfileSpec:
    runs: int = 50
    warmup: int = 5
    batches: list[int] | None = None  # None: each device's own batch sizes; latency thresholds use the first

    def __post_init__(self) -> None:
        bad_batches = self.batches is not None and (not self.batches or min(self.batches) <= 0)
        if self.runs <= 0 or self.warmup < 0 or bad_batches:
            raise ValueError("runs and batches must be positive, warmup not negative")


@dataclass(frozen=True)
class Recipe:
    model: str
    stages: list[Stage]
    data: DataSpec
    weights: str = DEFAULT_WEIGHTS  # "default" (the zoo's released weights), "random" or a path
    input_size: int | None = None
    num_classes: int | None = None
    devices: list[str] = field(default_factory=lambda: ["host"])
    profile: ProfileSpec = field(default_factory=ProfileSpec)
    thresholds: Thresholds = field(default_factory=Thresholds)
    name: str = ""  # default: the file's stem

    @classmethod
    def __from_yaml__(cls, node: ConfigNode) -> "Recipe":
        recipe = node.convert_fields(cls)
        if _has(node, "model"):
            _lookup(node.child("model"), "check_model", recipe.model)
        if not recipe.stages:
            raise node.child("stages").fail("a recipe needs at least one stage")
        _unique([s.name for s in recipe.stages], node.child("stages"), "stage name")
        _unique(recipe.devices, node.child("devices"), "device")
        for i, device in enumerate(recipe.devices):
            _lookup(node.child("devices").child(i), "check_device", device)
        _check_latency_devices(recipe, node)
        _check_parents(recipe, node)
        return _resolved(recipe, node)

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def thresholds_for(self, stage: str) -> Thresholds:
        return self.thresholds.merged(self.stage(stage).thresholds)


def load_recipe_file(path: Path, context: Mapping[str, Callable] | None = None) -> Recipe:
    """The recipe at `path`; `context` holds the registry checks (see the module docstring)."""
    recipe = load_config(Path(path), Recipe, context=context)
    return recipe if recipe.name else dataclasses.replace(recipe, name=Path(path).stem)


# --- helpers --------------------------------------------------------------------------------------

def resolved_data(data, data_node: ConfigNode):
    """A data block (recipe or sweep) with its eval and calib paths made absolute by context["resolve_path"]."""
    calib = None if data.calib is None else _lookup(data_node.child("calib"), "resolve_path", data.calib)
    return dataclasses.replace(data, eval=_lookup(data_node.child("eval"), "resolve_path", data.eval), calib=calib)


def _lookup(node: ConfigNode, check: str, name: Any) -> Any:
    """context[check](name), its DeployKitError turned into a ConfigError at `node`; None without one."""
    fn = node.context.get(check)
    if fn is None:
        return None
    try:
        return fn(name)
    except DeployKitError as exc:
        raise node.fail(exc.message, exc.fix) from None


def _check_parents(recipe: Recipe, node: ConfigNode) -> None:
    above: list[str] = []
    for i, stage in enumerate(recipe.stages):
        if stage.parent is not None and stage.parent not in above:
            raise node.child("stages").child(i).child("parent").fail(
                f"parent {stage.parent!r} is not a stage above this one",
                fix=f"one of: {', '.join(above)}" if above else
                "the first stage starts from the training form")
        above.append(stage.name)


def _resolved_options(stage: Stage, node: ConfigNode) -> Stage:
    """Options naming files or folders (`PATH_OPTIONS`) made absolute, errors at their lines."""
    if "resolve_path" not in node.context or not any(k in stage.options for k in PATH_OPTIONS):
        return stage
    options = dict(stage.options)
    for key in PATH_OPTIONS:
        if options.get(key) is not None:
            options[key] = _lookup(node.child("options").child(key), "resolve_path", Path(str(options[key])))
    return dataclasses.replace(stage, options=options)


def _resolved(recipe: Recipe, node: ConfigNode) -> Recipe:
    """Paths made absolute by context["resolve_path"] (and "default_weights"), errors at their lines."""
    if "resolve_path" not in node.context:
        return recipe
    data = resolved_data(recipe.data, node.child("data"))
    weights = recipe.weights
    if weights == DEFAULT_WEIGHTS:
        weights = str(_lookup(node.child("weights"), "default_weights", recipe.model))
    elif weights != RANDOM_WEIGHTS:
        weights = str(_lookup(node.child("weights"), "resolve_path", Path(weights)))
    return dataclasses.replace(recipe, data=data, weights=weights)


def _has(node: ConfigNode, key: str) -> bool:
    return any(k == key for k, _ in node.items())


def _unique(names: list[str], node: ConfigNode, what: str) -> None:
    seen = set()
    for i, name in enumerate(names):
        if name in seen:
            raise node.child(i).fail(f"duplicate {what} {name!r}")
        seen.add(name)


def _check_latency_devices(recipe: Recipe, node: ConfigNode) -> None:
    """A latency threshold for a device the recipe does not list would never be checked: an error."""
    tables = [(node.child("thresholds"), recipe.thresholds)]
    tables += [(node.child("stages").child(i).child("thresholds"), s.thresholds)
               for i, s in enumerate(recipe.stages) if s.thresholds is not None]
    for where, thresholds in tables:
        for device in thresholds.max_latency_ms:
            if device not in recipe.devices:
                raise where.child("max_latency_ms").child(device).key_fail(
                    f"latency threshold for device {device!r}, which the recipe does not list",
                    fix=f"add it to `devices` ({', '.join(recipe.devices)})")


__all__ = ["ConfigError", "DataSpec", "PassSpec", "ProfileSpec", "Recipe", "Stage", "Thresholds",
           "load_recipe_file"]
