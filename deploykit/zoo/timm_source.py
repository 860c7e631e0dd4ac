"""`timm/NAME`: timm's model code as a model source (the `timm` extra).

Models are built with `pretrained=False` and never downloaded: weights come from a local checkpoint
(`--weights`, timm's own key names, loaded weights-only) or the user asks for a random init. timm is
imported on first use, so deploykit works without it; every failure is one DeployKitError naming the fix.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path

from deploykit.core.errors import DeployKitError
from deploykit.core.preprocess import Preprocess

PREFIX = "timm/"
_INSTALL = 'pip install "deploykit[timm]"'


def is_timm_name(name: str | None) -> bool:
    return bool(name) and name.startswith(PREFIX)


def model_name(name: str) -> str:
    """`timm/mobileone_s1` -> `mobileone_s1`."""
    return name[len(PREFIX):] if is_timm_name(name) else name


def import_timm():
    """The timm module, or one error that says how to get a working one."""
    try:
        import timm
    except ModuleNotFoundError as exc:
        if exc.name == "timm":
            raise DeployKitError("timm is not installed (needed for timm/NAME models)", fix=_INSTALL) from exc
        raise _broken(exc) from exc
    except Exception as exc:  # noqa: BLE001 - e.g. a torchvision built for another torch fails on import
        raise _broken(exc) from exc
    return timm


def _broken(exc: Exception) -> DeployKitError:
    return DeployKitError(f"timm is installed but does not import: {type(exc).__name__}: {exc}",
                          fix=f"install a torchvision built for your torch, or reinstall with {_INSTALL}")


def check_name(name: str) -> str:
    """The timm model name behind `name` (with or without the prefix), or an error with close matches."""
    timm = import_timm()
    bare = model_name(name)
    if bare in timm.list_models():
        return bare
    close = difflib.get_close_matches(bare, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
    raise DeployKitError(f"unknown timm model {bare!r}{hint}",
                         fix="list them with `python -c \"import timm; print(timm.list_models('*mobileone*'))\"`")


def create(name: str, num_classes: int | None = None):
    """timm's model `name` in eval mode, random init (pretrained=False: nothing is downloaded)."""
    timm = import_timm()
    bare = check_name(name)
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    try:
        model = timm.create_model(bare, pretrained=False, **kwargs)
    except Exception as exc:  # noqa: BLE001 - timm's own builder: report it in one line
        raise DeployKitError(f"timm could not build {bare!r}: {type(exc).__name__}: {exc}",
                             fix="check the model name and --num-classes") from exc
    return model.eval()


def default_preprocess(name: str) -> Preprocess:
    """The preprocessing of timm model `name`'s default pretrained config (read without building it)."""
    timm = import_timm()
    cfg = timm.models.get_pretrained_cfg(check_name(name))
    return preprocess_from_config(cfg.to_dict() if cfg is not None else {})


def preprocess(model) -> Preprocess:
    """A built timm model's own preprocessing (its `pretrained_cfg`)."""
    return preprocess_from_config(dict(getattr(model, "pretrained_cfg", None) or {}))


def preprocess_from_config(cfg: dict) -> Preprocess:
    """Size, resize before the centre crop (timm's `floor(size / crop_pct)`), interpolation, mean, std."""
    _, height, width = cfg.get("input_size", (3, 224, 224))
    if height != width:
        raise DeployKitError(f"timm model input {height}x{width} is not square",
                             fix="deploykit exports square inputs: pass --input-size")
    crop_pct = cfg.get("crop_pct") or 0.875
    interpolation = cfg.get("interpolation", "bilinear")
    interpolation = interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
    return Preprocess(input_size=height, resize=math.floor(height / crop_pct), interpolation=interpolation,
                      mean=tuple(cfg.get("mean", Preprocess().mean)), std=tuple(cfg.get("std", Preprocess().std)))


def load_weights(model, path: Path) -> list[str]:
    """A local timm checkpoint (safetensors, or a weights-only pickle) loaded strictly into `model`; the
    warnings about its values (absurd magnitudes) for the user to see."""
    from deploykit.zoo.checkpoint import load_into, magnitude_warnings, read_state_dict

    state = read_state_dict(Path(path))
    load_into(model, state, source=f"weights {path}")
    return magnitude_warnings(state, f"weights {path}")
