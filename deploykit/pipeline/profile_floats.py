"""The float original of each profiled artifact: the training-form PyTorch model it descends from, rebuilt
from the manifest (model name + weights file, checked by sha256), one row per distinct (model, weights,
preprocessing, classes). The reference every artifact's agreement is measured against."""

from __future__ import annotations

import time
from pathlib import Path

from deploykit import zoo
from deploykit.core.devices import Device
from deploykit.core.errors import DeployKitError
from deploykit.core.fsutil import sha256_file
from deploykit.core.manifest import Manifest
from deploykit.core.preprocess import Preprocess
from deploykit.pipeline.profile_measure import Candidate, Progress
from deploykit.pipeline.weights import load_weights
from deploykit.profile.results import FLOAT_ORIGINAL, Cost, ProfileRow


def float_originals(candidates: list[Candidate], device: Device, progress: Progress) -> list[Candidate]:
    """One torch row per distinct (model, weights, preprocessing, classes); artifacts point to theirs."""
    from deploykit.runtimes.torch import TorchModel

    floats: dict[tuple, Candidate] = {}
    for candidate in candidates:
        manifest = candidate.manifest
        if manifest is None:
            continue
        classes = candidate.num_classes
        key = (manifest.model, manifest.weights_sha256, candidate.group, classes)
        if key not in floats:
            weights, why_not = _parent_weights(candidate.row.path, manifest)
            if weights is None:
                candidate.row.notes.append(f"no float original: {why_not}")
                continue
            progress(f"loading {manifest.model} float original", 0, 1)
            start = time.perf_counter()
            try:
                loaded = load_weights(manifest.model, zoo.create(manifest.model, num_classes=classes), weights)
            except DeployKitError as exc:  # not a zoo model (--model-from), or weights that no longer fit
                candidate.row.notes.append(f"no float original: {exc.message}")
                continue
            runnable = TorchModel(loaded.model, threads=device.threads)
            load_ms = 1e3 * (time.perf_counter() - start)
            row = ProfileRow(name="", role=FLOAT_ORIGINAL, device=device.name, runtime="torch",
                             runtime_version=runnable.version, precision_used="", model=manifest.model,
                             file_size_bytes=weights.stat().st_size, load_ms=load_ms,
                             cost=_float_cost(loaded.model, candidate.preprocess, loaded.form),
                             notes=[f"{loaded.form}-form PyTorch model with {weights.name}; file size is the "
                                    f"weights file's"])
            floats[key] = Candidate(row, runnable, candidate.preprocess)
        candidate.reference = floats[key]
    _name_floats(list(floats.items()))
    for candidate in candidates:
        if candidate.reference is not None:
            candidate.row.reference = candidate.reference.row.name
    return list(floats.values())


def _name_floats(floats: list[tuple[tuple, Candidate]]) -> None:
    """"resnet56_cifar (float)", told apart by input size and weights when one model appears twice."""
    models = [key[0] for key, _ in floats]
    for key, candidate in floats:
        model, sha = key[0], key[1]
        extra = "" if models.count(model) == 1 else f" {candidate.preprocess.input_size}px {sha[:8]}"
        candidate.row.name = f"{model} (float{extra})"


def _parent_weights(artifact: str, manifest: Manifest) -> tuple[Path | None, str]:
    """(the weights file the artifact was exported from, "") or (None, why it cannot be found). Manifests
    before `parent.weights` existed are matched by sha256 against the file name beside the artifact and
    the zoo's released weights."""
    sha = manifest.parent.get("weights_sha256", manifest.weights_sha256)
    if sha == "random-init":
        return None, "it was exported from a random init (export with --weights to compare against one)"
    tried = []
    for path in _weight_candidates(Path(artifact), manifest):
        if path in tried:
            continue
        tried.append(path)
        if path.is_file() and sha256_file(path) == sha:
            return path, ""
    where = ", ".join(str(p) for p in tried) or "nowhere: the manifest names no weights file"
    return None, f"no weights file with the manifest's sha256 {sha[:12]}… (looked at {where})"


def _weight_candidates(artifact: Path, manifest: Manifest) -> list[Path]:
    parent = manifest.parent
    paths = [Path(parent["weights"])] if parent.get("weights") else []
    if parent.get("weights_file"):
        paths.append(artifact.parent / parent["weights_file"])
    try:
        entry = zoo.get(manifest.model)
    except DeployKitError:
        return paths
    if getattr(entry, "default_weights", None) is not None:
        paths.append(Path(entry.default_weights()))
    return paths


def _float_cost(model, preprocess: Preprocess, form: str) -> Cost:
    from deploykit.profile.cost import count_cost

    size = preprocess.input_size
    report = count_cost(model, size)
    return Cost(report.params, report.macs, report.memory_access, f"{form}-form PyTorch model at {size}x{size}")


def ordered(floats: list[Candidate], candidates: list[Candidate]) -> list[Candidate]:
    """Each float original first, then the artifacts compared with it, then those without one."""
    ordered = []
    for reference in floats:
        ordered += [reference] + [c for c in candidates if c.reference is reference]
    return ordered + [c for c in candidates if c.reference is None]
