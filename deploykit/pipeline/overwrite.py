"""No silent overwrite: an export replaces an artifact of the same name only when it is the same export.

File names carry what most often differs (precision, `.int8`, `.pruned30`: see the targets' `variant` and
`pruned_stem`); everything else that makes an artifact what it is — model, weights, input size, target
options, passes, pruning and fine-tuning — is recorded in the manifest (`extra["request"]`) and compared
before any work starts. Rerunning the same command replaces its artifact; a different export at that name
is refused unless `force` (`--force`). How the export ran (threads) is not part of it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from deploykit.core.errors import DeployKitError
from deploykit.core.manifest import Manifest, manifest_path

RUN_ONLY = ("threads",)  # options that change how an export runs, never what it writes


def pruned_stem(stem: str, prune) -> str:
    """`resnet56_cifar` -> `resnet56_cifar.pruned30` for --prune 0.3 (`.pruned-macsN` for a MACs target)."""
    if prune is None:
        return stem
    config = prune.config
    tag = f"pruned{round(config.ratio * 100)}" if config.ratio is not None else f"pruned-macs{config.target_macs}"
    return f"{stem}.{tag}"


def request_record(request, *, weights_sha256: str, input_size: int) -> dict:
    """What makes the artifact of `request` (an ExportRequest) what it is, as plain JSON values."""
    options = {key: value for key, value in request.options.items() if key not in RUN_ONLY}
    prune = None
    if request.prune is not None:
        prune = {k: v for k, v in dataclasses.asdict(request.prune).items() if k not in RUN_ONLY}
    record = {"model": request.name, "target": request.target, "weights_sha256": weights_sha256,
              "input_size": input_size, "batch": request.batch, "num_classes": request.num_classes,
              "options": options, "passes": request.passes, "prune": prune}
    return json.loads(json.dumps(record, default=str, sort_keys=True))


def check_same_export(final: Path, record: dict, *, force: bool) -> None:
    """Refuse to replace a deploykit artifact at `final` made by a different export, unless `force`."""
    if force or not os.path.lexists(final):
        return
    try:
        previous = Manifest.read(manifest_path(final)).extra.get("request")
    except (OSError, ValueError, TypeError, KeyError):
        return  # not a deploykit artifact: publish's check_replaceable refuses it, with its own message
    if previous == record:
        return
    raise DeployKitError(f"{final} holds a different export ({_differences(previous, record)}); refusing to "
                         "replace it", fix="pass --force to replace it, or --out DIR to keep both")


def _differences(previous: dict | None, record: dict, limit: int = 3) -> str:
    if not isinstance(previous, dict):
        return "made by an older deploykit that did not record how"
    changed = [f"{key}: {_short(_get(previous, key))} -> {_short(_get(record, key))}"
               for key in _flat_keys(previous, record) if _get(previous, key) != _get(record, key)]
    return "; ".join(changed[:limit]) + (f"; {len(changed) - limit} more" if len(changed) > limit else "")


def _flat_keys(*records: dict) -> list[str]:
    keys = []
    for record in records:
        for key, value in record.items():
            nested = [f"{key}.{sub}" for sub in value] if isinstance(value, dict) and key != "prune" else [key]
            keys += [k for k in nested if k not in keys]
    return keys


def _get(record: dict, key: str):
    head, _, sub = key.partition(".")
    value = record.get(head)
    return value.get(sub) if sub and isinstance(value, dict) else value


def _short(value, limit: int = 40) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit - 1] + "…"
