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

from pathlib import Path

from deploykit import runtimes
from deploykit.core.devices import Device
from deploykit.core.digest import artifact_size
from deploykit.core.errors import DeployKitError
from deploykit.core.manifest import Manifest, verified_manifest
from deploykit.core.preprocess import Preprocess
from deploykit.pipeline.evaluate import PreprocessOptions, options_preprocess
from deploykit.pipeline.profile_floats import float_originals, ordered
from deploykit.pipeline.profile_measure import (Candidate, Progress, latency_is_unstable, measure_energy,
                                                measure_latency, measure_quality, warm_up)
from deploykit.pipeline.runners import LOCAL, Runner, reach_device
from deploykit.profile.results import ARTIFACT, Cost, ProfileReport, ProfileRow

__all__ = ["ProfileReport", "ProfileRow", "latency_is_unstable", "layout_mismatch", "profile_artifacts",
           "reach_device", "unique_names"]


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
    warm_up(candidates, warmup, progress)
    floats = float_originals(candidates, device, progress)
    for reference in floats if runner is not LOCAL else []:
        reference.row.notes.append("ran on this host, not on the device: its latency is the host's")
    warm_up(floats, warmup, progress)
    everything = ordered(floats, candidates)
    inputs = measure_quality(everything, data, limit, progress)
    measure_latency(everything, list(batches), runs, warmup, progress)
    counter, source = open_counter(device.runtime) if runner is LOCAL else \
        (None, "n/a: profiled through the device's agent, which reads no energy counter")
    measure_energy(everything, counter, source, progress)
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


# --- loading ------------------------------------------------------------------------------------

def _load_artifacts(paths: list[Path], device: Device, progress: Progress,
                    runner: Runner = LOCAL) -> list[Candidate]:
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
        preprocess = _artifact_preprocess(path, manifest)
        row = ProfileRow(name=name, role=ARTIFACT, device=device.name, runtime=device.runtime,
                         runtime_version=runnable.version, precision_used="", path=str(path),
                         model=manifest.model if manifest else None, file_size_bytes=artifact_size(path),
                         load_ms=load_ms, cost=_artifact_cost(path, manifest, preprocess))
        if manifest is None:
            row.notes.append("no manifest beside it: preprocessing from the graph's input shape (scale 1/255), "
                             "no float original to compare with")
        row.notes += layout_mismatch(manifest, device)
        candidates.append(Candidate(row, runnable, preprocess, manifest, runner=runner))
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


def _artifact_preprocess(path: Path, manifest: Manifest | None) -> Preprocess:
    """The manifest's preprocessing; without one, eval's defaults for the ONNX graph's input shape."""
    if manifest is not None:
        return manifest.preprocessing()
    if path.suffix != ".onnx":
        raise DeployKitError(f"{path} has no manifest, so its preprocessing is unknown",
                             fix="profile artifacts exported by deploykit (the manifest sits beside them)")
    try:
        return options_preprocess(PreprocessOptions(), runtimes.onnx_input_shape(path))
    except DeployKitError as exc:  # its fix names eval's --size, an option profile does not have
        raise DeployKitError(f"{path} has no manifest and {exc.message}",
                             fix="profile an artifact exported by deploykit (its manifest records the input "
                                 "size), or give the graph a static square input shape") from None


def _artifact_cost(path: Path, manifest: Manifest | None, preprocess: Preprocess) -> Cost:
    """From the ONNX graph itself when there is one (a pruned graph differs from the zoo's deploy form),
    else from the manifest model's deploy form at the exported input size."""
    from deploykit.pipeline.zoo_cost import deploy_cost
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
