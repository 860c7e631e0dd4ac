"""Artifacts on a device, next to the float original they descend from: what they cost and what they lose.

`profile_artifacts` loads every artifact in the device's runtime, rebuilds each artifact's float original
(the training-form PyTorch model, found through the manifest: model name + weights file, checked by
sha256), and measures for each: load and warm-up time, latency per batch size (the candidates of one
runtime timed in alternating blocks round by round, so load spikes on a shared machine hit them alike,
and a p50 whose rounds disagree is flagged), file size, params / MACs / memory access, accuracy through
the one preprocessing with agreement, cosine and SQNR against the float original's outputs on the same
images, the precision the runtime really used, and energy per image where the machine has a counter.
The float original is a row of its own (runtime "torch"): the reference.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from deploykit import runtimes, zoo
from deploykit.core.compare import compare_outputs
from deploykit.core.devices import Device
from deploykit.core.errors import DeployKitError
from deploykit.core.fsutil import sha256_file
from deploykit.core.manifest import Manifest, verified_manifest
from deploykit.core.preprocess import Preprocess
from deploykit.data.datasets import open_dataset
from deploykit.data.loader import batches as data_batches
from deploykit.data.loader import sample_indices
from deploykit.pipeline.evaluate import PreprocessOptions, fixed_batch, options_preprocess, resolve_data
from deploykit.pipeline.runners import LOCAL, Runner
from deploykit.profile.accuracy import count_hits
from deploykit.profile.results import (ARTIFACT, FLOAT_ORIGINAL, BatchLatency, Cost, Energy, ProfileReport,
                                       ProfileRow, Quality)

Progress = Callable[[str, int, int], None]  # (what, done, total)
EVAL_BATCH = 32
PROBE_IMAGES = 64  # inputs for agreement when no --data is given: seeded random images
UNSTABLE_SPREAD = 0.10  # two runs of one profile should agree on p50 within this
LATENCY_ATTEMPTS = 2  # an unstable latency is measured once more before it is reported as unstable

__all__ = ["ProfileReport", "ProfileRow", "profile_artifacts", "reach_device"]


@dataclass
class _Candidate:
    """A row being measured: its runnable and the preprocessing its inputs go through."""

    row: ProfileRow
    runnable: runtimes.Runnable
    preprocess: Preprocess
    manifest: Manifest | None = None
    reference: "_Candidate | None" = None
    num_classes: int | None = None  # the output's width, read at warm-up
    outputs: list[np.ndarray] = field(default_factory=list)
    runner: Runner = LOCAL  # where it loads, warms up and is timed: here, or on the device through its agent

    @property
    def group(self) -> str:
        """Candidates with the same preprocessing share their inputs (decoded once)."""
        return json.dumps(self.preprocess.to_dict(), sort_keys=True)

    @property
    def static_batch(self) -> int | None:
        return self.runnable.static_batch


def profile_artifacts(artifacts: list[Path], device: Device, *, data: Path | None = None, limit: int | None = None,
                      batches: list[int] = (1,), runs: int = 50, warmup: int = 5,
                      progress: Progress | None = None) -> ProfileReport:
    """Measure `artifacts` and their float originals on `device` (see the module docstring)."""
    from deploykit.profile.energy import open_counter
    from deploykit.profile.environment import environment

    _check_settings(artifacts, batches, runs, warmup)
    runner = reach_device(device)
    progress = progress or (lambda what, done, total: None)
    candidates = _load_artifacts([Path(a) for a in artifacts], device, progress, runner)
    _warm_up(candidates, warmup, progress)
    floats = _float_originals(candidates, device, progress)
    for reference in floats if runner is not LOCAL else []:
        reference.row.notes.append("ran on this host, not on the device: its latency is the host's")
    _warm_up(floats, warmup, progress)
    everything = _ordered(floats, candidates)
    inputs = _measure_quality(everything, data, limit, progress)
    _measure_latency(everything, list(batches), runs, warmup, progress)
    counter, source = open_counter(device.runtime) if runner is LOCAL else \
        (None, "n/a: profiled through the device's agent, which reads no energy counter")
    _measure_energy(everything, counter, source, progress)
    env = {**environment(threads=device.threads), "energy_counter": source, **runner.environment()}
    settings = {"data": None if data is None else str(data), "limit": limit, "inputs": inputs, "runs": runs,
                "warmup": warmup, "batches": list(batches)}
    return ProfileReport(env, [c.row for c in everything], {device.name: device.to_dict()}, settings)


def _check_settings(artifacts: list, batches: list[int], runs: int, warmup: int) -> None:
    if not artifacts:
        raise DeployKitError("nothing to profile", fix="pass one or more artifacts (.onnx files, ...)")
    if not batches or min(batches) <= 0:
        raise DeployKitError(f"batch sizes must be positive, got {list(batches)}", fix="e.g. --batch 1,8")
    if runs <= 0 or warmup < 0:
        raise DeployKitError(f"runs must be positive and warmup not negative (got {runs}, {warmup})",
                             fix="e.g. --runs 50 --warmup 5")


# --- devices --------------------------------------------------------------------------------------

def reach_device(device: Device) -> Runner:
    """This machine's runner for a local device; for a remote one, its agent's (checked to answer and to
    take our token), or an error saying how to reach it."""
    if device.is_local:
        return LOCAL
    if device.adb is not None:  # a phone: its own benchmark tool times, this host computes outputs
        from deploykit.pipeline.adb_runner import AdbRunner

        return AdbRunner.connect(device)
    if device.agent is None:
        raise DeployKitError(f"device {device.name} is remote and has no agent configured",
                             fix=f"add `agent: {{url: http://HOST:8765, token_env: DEPLOYKIT_AGENT_TOKEN}}` to "
                                 f"devices/{device.name}.yaml and run `deploykit agent serve` on the device")
    from deploykit.agent.client import AgentRunner

    return AgentRunner.connect(device)


# --- loading --------------------------------------------------------------------------------------

def _load_artifacts(paths: list[Path], device: Device, progress: Progress,
                    runner: Runner = LOCAL) -> list[_Candidate]:
    for path in paths:
        if not path.exists():
            raise DeployKitError(f"artifact not found: {path}", fix="pass the path of an exported artifact")
    names = unique_names(paths)
    candidates = []
    for i, (path, name) in enumerate(zip(paths, names)):
        progress(f"loading {name}", i, len(paths))
        manifest = verified_manifest(path)  # refuses an artifact its manifest does not describe
        runnable, load_s = runner.load(path, device)
        load_ms = 1e3 * load_s
        preprocess = _artifact_preprocess(path, manifest, runnable)
        row = ProfileRow(name=name, role=ARTIFACT, device=device.name, runtime=device.runtime,
                         runtime_version=runnable.version, precision_used="", path=str(path),
                         model=manifest.model if manifest else None, file_size_bytes=_size(path),
                         load_ms=load_ms, cost=_artifact_cost(path, manifest, preprocess))
        if manifest is None:
            row.notes.append("no manifest beside it: preprocessing from the graph's input shape (scale 1/255), "
                             "no float original to compare with")
        row.notes += layout_mismatch(manifest, device)
        candidates.append(_Candidate(row, runnable, preprocess, manifest, runner=runner))
    progress("loading", len(paths), len(paths))
    return candidates


def layout_mismatch(manifest: Manifest | None, device: Device) -> list[str]:
    """An int8 file laid out for another runtime runs, but not at its best (or not in int8 at all)."""
    layout = ((manifest.extra or {}).get("int8") or {}).get("layout") if manifest is not None else None
    if not layout or device.runtime in layout.get("runtimes", ()):
        return []
    made_for = ", ".join(layout["runtimes"])
    return [f"int8 laid out for {made_for}, run on {device.runtime}: re-export with --device {device.name} for the "
            f"layout {device.runtime} runs fastest"]


def unique_names(paths: list[Path]) -> list[str]:
    """The shortest trailing part of each path that tells it apart from the others."""
    depth = 1
    while True:
        names = ["/".join(p.resolve().parts[-depth:]) for p in paths]
        if len(set(names)) == len(names) or depth > max(len(p.resolve().parts) for p in paths):
            return names
        depth += 1


def _artifact_preprocess(path: Path, manifest: Manifest | None, runnable) -> Preprocess:
    if manifest is not None:
        return Preprocess.from_dict(manifest.preprocess)
    session = getattr(runnable.model, "session", None)
    if session is None:
        raise DeployKitError(f"{path} has no manifest, so its preprocessing is unknown",
                             fix="profile artifacts exported by deploykit (the manifest sits beside them)")
    try:
        return options_preprocess(PreprocessOptions(), list(session.get_inputs()[0].shape))
    except DeployKitError as exc:  # its fix names eval's --size, an option profile does not have
        raise DeployKitError(f"{path} has no manifest and {exc.message}",
                             fix="profile an artifact exported by deploykit (its manifest records the input "
                                 "size), or give the graph a static square input shape") from None


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _artifact_cost(path: Path, manifest: Manifest | None, preprocess: Preprocess) -> Cost:
    """From the ONNX graph itself when there is one (a pruned graph differs from the zoo's deploy form),
    else from the manifest model's deploy form at the exported input size."""
    from deploykit.profile.cost import deploy_cost
    from deploykit.profile.graph_cost import onnx_cost

    try:
        if path.suffix == ".onnx":
            report, source = onnx_cost(path), "ONNX graph"
        elif manifest is not None:
            size = preprocess.input_size
            report, source = deploy_cost(manifest.model, size), f"deploy form of {manifest.model} at {size}x{size}"
        else:
            return Cost(source="n/a: no ONNX graph and no manifest")
    except DeployKitError as exc:
        return Cost(source=f"n/a: {exc.message}")
    return Cost(report.params, report.macs or None, report.memory_access or None, source)


# --- float originals ------------------------------------------------------------------------------

def _float_originals(candidates: list[_Candidate], device: Device, progress: Progress) -> list[_Candidate]:
    """One torch row per distinct (model, weights, preprocessing, classes); artifacts point to theirs."""
    from deploykit.runtimes.torch import TorchModel

    floats: dict[tuple, _Candidate] = {}
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
                loaded = zoo.load_weights(manifest.model, zoo.create(manifest.model, num_classes=classes), weights)
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
            floats[key] = _Candidate(row, runnable, candidate.preprocess)
        candidate.reference = floats[key]
    _name_floats(list(floats.items()))
    for candidate in candidates:
        if candidate.reference is not None:
            candidate.row.reference = candidate.reference.row.name
    return list(floats.values())


def _name_floats(floats: list[tuple[tuple, _Candidate]]) -> None:
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
    from deploykit.profile.cost import cost

    size = preprocess.input_size
    report = cost(model, size)
    return Cost(report.params, report.macs, report.memory_access, f"{form}-form PyTorch model at {size}x{size}")


def _ordered(floats: list[_Candidate], candidates: list[_Candidate]) -> list[_Candidate]:
    """Each float original first, then the artifacts compared with it, then those without one."""
    ordered = []
    for reference in floats:
        ordered += [reference] + [c for c in candidates if c.reference is reference]
    return ordered + [c for c in candidates if c.reference is None]


# --- measurements ---------------------------------------------------------------------------------

def _probe(preprocess: Preprocess, batch: int, seed: int = 0) -> np.ndarray:
    shape = (batch, preprocess.num_channels, preprocess.input_size, preprocess.input_size)
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def _warm_up(candidates: list[_Candidate], warmup: int, progress: Progress) -> None:
    """Time the first `warmup` runs (at least one: lazy initialisation shows up here); the output's width
    is the number of classes, which the float original is built with."""
    for i, candidate in enumerate(candidates):
        progress(f"warming up {candidate.row.name}", i, len(candidates))
        probe = _probe(candidate.preprocess, candidate.static_batch or 1)
        seconds, out = candidate.runner.warm_up(candidate.runnable, probe, max(1, warmup))
        candidate.row.warmup_ms = 1e3 * seconds
        candidate.num_classes = int(np.asarray(out).reshape(len(probe), -1).shape[1])
        candidate.row.precision_used = candidate.runnable.precision_used


def _measure_quality(candidates: list[_Candidate], data: Path | None, limit: int | None,
                     progress: Progress) -> str:
    """Accuracy (with labels) and agreement with the float original on the same inputs, per group of
    candidates that share a preprocessing. Returns what the inputs were."""
    description = ""
    for group in _groups(candidates):
        preprocess = group[0].preprocess
        n, labels, description = _run_inputs(group, preprocess, data, limit, progress)
        for candidate in group:
            candidate.row.quality = _quality(candidate, n, labels, description)
        for candidate in group:
            candidate.outputs = []
    return description


def _groups(candidates: list[_Candidate]) -> list[list[_Candidate]]:
    groups: dict[str, list[_Candidate]] = {}
    for candidate in candidates:
        groups.setdefault(candidate.group, []).append(candidate)
    return list(groups.values())


def _run_inputs(group: list[_Candidate], preprocess: Preprocess, data: Path | None, limit: int | None,
                progress: Progress) -> tuple[int, np.ndarray | None, str]:
    """Feed every candidate the same batches; keep their outputs. (images, labels or None, description)."""
    if data is None:
        stream = ((_probe(preprocess, PROBE_IMAGES, seed=1), None),)
        total, description = PROBE_IMAGES, f"random probe ({PROBE_IMAGES} images, seed 1; no --data)"
    else:
        path = resolve_data(Path(data))
        dataset = open_dataset(path)
        total = len(sample_indices(len(dataset), limit))
        stream = data_batches(dataset, preprocess, EVAL_BATCH, limit=limit)
        description = f"{data} ({total} of {len(dataset)} images)" if total < len(dataset) else f"{data} ({total} images)"
    predicts = [_predict(c) for c in group]
    labels, done = [], 0
    for images, batch_labels in stream:
        for candidate, predict in zip(group, predicts):
            candidate.outputs.append(np.asarray(predict(images)).reshape(len(images), -1).astype(np.float32))
        labels.append(batch_labels)
        done += len(images)
        progress("accuracy and agreement", done, total)
    if done == 0:
        raise DeployKitError(f"no images in {data}", fix="check the --data path")
    has_labels = all(batch is not None for batch in labels)
    return done, np.concatenate(labels) if has_labels else None, description


def _predict(candidate: _Candidate) -> Callable[[np.ndarray], np.ndarray]:
    static = candidate.static_batch
    return fixed_batch(candidate.runnable.run, static) if static else candidate.runnable.run


def _quality(candidate: _Candidate, n: int, labels: np.ndarray | None, inputs: str) -> Quality:
    logits = np.concatenate(candidate.outputs)
    top1 = top5 = None
    if labels is not None:
        if labels.max() >= logits.shape[1] or labels.min() < 0:
            raise DeployKitError(f"a label of the data is outside {candidate.row.name}'s {logits.shape[1]} classes",
                                 fix="check that the dataset and the model use the same class list")
        hits1, hits5 = count_hits(logits, labels)
        top1, top5 = hits1 / n, (hits5 / n if logits.shape[1] >= 5 else None)
    if candidate.reference is None:
        return Quality(n, inputs, top1, top5)
    stats = compare_outputs(np.concatenate(candidate.reference.outputs), logits, "fp32")
    return Quality(n, inputs, top1, top5, stats.top1_agreement, stats.cosine, stats.sqnr_db, stats.max_rel_err)


def _measure_latency(candidates: list[_Candidate], batches: list[int], runs: int, warmup: int,
                     progress: Progress) -> None:
    """Per batch size, every candidate that can run it: those of one runtime timed in alternating blocks,
    runtimes one after the other (the float original's torch thread pool would otherwise compete with the
    device runtime's for the same cores)."""
    for batch in batches:
        able = [c for c in candidates if c.static_batch in (None, batch)]
        inputs = {c.group: _probe(c.preprocess, batch) for c in able}
        stats = {}
        for runtime in dict.fromkeys(c.row.runtime for c in able):
            group = [c for c in able if c.row.runtime == runtime]  # one runtime: one runner (here or the agent)
            calls = {c.row.name: (c.runnable, inputs[c.group]) for c in group}
            for attempt in range(LATENCY_ATTEMPTS):  # bounded: an unstable measurement is repeated, then said
                what = f"latency, batch {batch} ({runtime})" + (", again: unstable" if attempt else "")
                measured = group[0].runner.latency(
                    calls, runs=runs, warmup=warmup, progress=lambda done, total: progress(what, done, total))
                stats.update({k: v for k, v in measured.items() if _steadier(v, stats.get(k))})
                if not any(latency_is_unstable(stats[name].spread) for name in calls):
                    break
        for candidate in candidates:
            s = stats.get(candidate.row.name)
            candidate.row.latency.append(
                BatchLatency(batch, s.p50_ms, s.p90_ms, s.p99_ms, s.mean_ms, s.runs, spread=s.spread) if s else
                BatchLatency(batch, note=f"n/a (static batch {candidate.static_batch})"))
            _flag_unstable(candidate.row, candidate.row.latency[-1])


def latency_is_unstable(spread: float | None) -> bool:
    return spread is not None and spread > UNSTABLE_SPREAD


def _steadier(new, old) -> bool:
    """Keep the attempt whose timing rounds agreed best (the first when neither says)."""
    return old is None or (new.spread is not None and (old.spread is None or new.spread < old.spread))


def _flag_unstable(row, lat: BatchLatency) -> None:
    """A p50 whose timing rounds disagree by more than the repeatability we promise is said to be one."""
    if latency_is_unstable(lat.spread):
        row.notes.append(f"batch {lat.batch}: latency unstable, the medians of its timing rounds differ by "
                         f"{lat.spread:.0%} (> {UNSTABLE_SPREAD:.0%}): the machine was busy; rerun when it is quiet")


def _call(runnable, batch: np.ndarray) -> Callable[[], object]:
    return lambda: runnable.run(batch)


def _measure_energy(candidates: list[_Candidate], counter, source: str, progress: Progress) -> None:
    from deploykit.profile.energy import measure_energy

    for i, candidate in enumerate(candidates):
        if counter is not None:
            progress("energy", i, len(candidates))
        batch = candidate.static_batch or 1
        reading = measure_energy(counter, source, _call(candidate.runnable, _probe(candidate.preprocess, batch)),
                                 images=batch)
        candidate.row.energy = Energy(reading.joules_per_image, reading.source)
