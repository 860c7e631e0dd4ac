"""The work of a sweep, as plain functions Ray runs as tasks (builds, evaluations) or on a device's
measuring actor (latency): each takes a job, checks the cache first, writes its result to the cache
itself (so work finished under a driver that was killed is kept) and returns a small dict.

A failure is a result, not an exception: `{"ok": False, "reason": ...}`, so one bad trial never stops
the sweep and Ray retries only what it should (a task whose worker died).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploykit.core.devices import Device
from deploykit.core.errors import DeployKitError
from deploykit.pipeline.cache import PipelineCache
from deploykit.pipeline.plan import Plan
from deploykit.pipeline.sweep_plan import EvalData, cached_record
from deploykit.profile.accuracy import logits_accuracy

EVAL_BATCH = 32


@dataclass(frozen=True)
class EvalJob:
    label: str
    artifact: Path
    device: Device
    key: str
    reference_key: str
    data: EvalData
    cache_root: Path
    threads: int = 1


@dataclass(frozen=True)
class ReferenceJob:
    key: str
    model: str
    weights: Path
    input_size: int | None
    num_classes: int | None
    data: EvalData
    cache_root: Path
    threads: int = 1


@dataclass(frozen=True)
class LatencyJob:
    label: str
    artifact: Path
    anchor: Path | None
    device: Device
    key: str
    batch: int
    runs: int
    warmup: int
    cache_root: Path


def build_artifact(plan: Plan) -> dict:
    """The one-stage plan's artifact, from the cache or built through the export pipeline into it."""
    from deploykit.pipeline.export import export
    from deploykit.pipeline.run import export_request

    step = plan.artifacts[0]
    start = time.perf_counter()
    cached = plan.cache.artifact(step.key)
    built = cached is None
    try:
        if built:
            cached = plan.cache.build_artifact(step.key, step.inputs,
                                               lambda out: export(export_request(step, plan, out)).artifact)
    except DeployKitError as exc:
        kind = "parity check failed" if exc.exit_code == 1 else "build failed"
        return {"ok": False, "reason": f"{kind}: {exc.message}", "seconds": time.perf_counter() - start}
    layout = ((cached.manifest.extra or {}).get("int8") or {}).get("made_for") or {}
    return {"ok": True, "artifact": str(cached.artifact), "sha256": cached.sha256, "built": built,
            "precision": cached.manifest.precision, "size_bytes": cached.manifest.size_bytes,
            "layout_runtime": layout.get("runtime"), "seconds": time.perf_counter() - start, **_where()}


# --- evaluation -----------------------------------------------------------------------------------

def eval_images(data: EvalData):
    """The evaluation dataset, less the calibration pool when the sweep says so."""
    from deploykit.data.calibration import exclude_calibration
    from deploykit.data.datasets import open_dataset

    dataset = open_dataset(data.path)
    if data.exclude is not None:
        dataset, _ = exclude_calibration(dataset, data.path, data.exclude)
    return dataset


def predict_all(predict, data: EvalData, preprocess) -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) of every evaluation image, in the one order every artifact sees them."""
    from deploykit.data.loader import batches

    logits, labels = [], []
    for images, batch_labels in batches(eval_images(data), preprocess, EVAL_BATCH, limit=data.limit):
        logits.append(np.asarray(predict(images)).reshape(len(images), -1).astype(np.float32))
        labels.append(batch_labels)
    if not logits or any(b is None for b in labels):
        raise DeployKitError(f"no labelled images in {data.path}", fix="point data.eval at a labelled folder")
    return np.concatenate(logits), np.concatenate(labels)


def evaluate_reference(job: ReferenceJob) -> dict:
    """The float training form in PyTorch on the evaluation images: top-1 and its logits (cached)."""
    cache = PipelineCache(job.cache_root)
    cached = cached_record(cache, job.key)
    if cached is not None and cache.logits(job.key) is not None:
        return {"ok": True, **cached, "computed": False}
    try:
        logits, labels, preprocess = _reference_logits(job)
    except DeployKitError as exc:
        return {"ok": False, "reason": f"float reference: {exc.message}"}
    top = logits_accuracy(logits, labels)
    value = {"top1": top.top1, "top5": top.top5, "n": top.n, "input_size": preprocess.input_size, **_where()}
    cache.store_measurement(job.key, value, logits=logits)
    return {"ok": True, **value, "computed": True}


def _reference_logits(job: ReferenceJob):
    from deploykit import zoo
    from deploykit.pipeline.weights import load_weights
    from deploykit.runtimes.torch import TorchModel

    entry = zoo.get(job.model)
    loaded = load_weights(job.model, zoo.create(job.model, num_classes=job.num_classes), job.weights)
    preprocess = entry.preprocess.with_size(job.input_size or entry.input_size)
    logits, labels = predict_all(TorchModel(loaded.model, threads=job.threads).run, job.data, preprocess)
    return logits, labels, preprocess


def evaluate_artifact(job: EvalJob, runner=None) -> dict:
    """Accuracy of the artifact in the device's runtime on the evaluation images, and its agreement and
    SQNR against the float reference on the same images (cached). `runner`: the device's agent for a
    remote device; here, with the task's own thread count, for a local one."""
    cache = PipelineCache(job.cache_root)
    cached = cached_record(cache, job.key)
    if cached is not None:
        return {"ok": True, **cached, "computed": False}
    reference = cache.logits(job.reference_key)
    if reference is None:
        return {"ok": False, "reason": "no float reference to compare with (its evaluation failed)"}
    try:
        value = _evaluate(job, reference, runner)
    except DeployKitError as exc:
        return {"ok": False, "reason": f"evaluation on {job.device.name}: {exc.message}"}
    cache.store_measurement(job.key, value)
    return {"ok": True, **value, "computed": True}


def _evaluate(job: EvalJob, reference: np.ndarray, runner) -> dict:
    from deploykit.core.compare import compare_outputs
    from deploykit.core.manifest import Manifest, manifest_path
    from deploykit.pipeline.runners import LOCAL
    from deploykit.runtimes import predictor

    device = job.device if runner is not None else dataclasses.replace(job.device, threads=job.threads)
    runnable, _ = (runner or LOCAL).load(job.artifact, device)
    preprocess = Manifest.read(manifest_path(job.artifact)).preprocessing()
    predict = predictor(runnable)
    logits, labels = predict_all(predict, job.data, preprocess)
    top = logits_accuracy(logits, labels)
    stats = compare_outputs(reference, logits, "fp32")  # statistics only: the verdict is the thresholds'
    return {"top1": top.top1, "top5": top.top5, "n": top.n, "agreement": stats.top1_agreement,
            "cosine": stats.cosine, "sqnr_db": stats.sqnr_db, "precision_used": str(runnable.precision_used),
            "runtime_version": str(runnable.version), **_cost(job.artifact), **_where()}


def _cost(artifact: Path) -> dict:
    from deploykit.profile.graph_cost import onnx_cost

    if Path(artifact).suffix != ".onnx":
        return {"macs": None, "params": None}
    try:
        report = onnx_cost(Path(artifact))
    except DeployKitError:
        return {"macs": None, "params": None}
    return {"macs": report.macs or None, "params": report.params}


# --- latency --------------------------------------------------------------------------------------

def measure_latency(job: LatencyJob, runner) -> dict:
    """p50 of the artifact timed in alternating blocks beside the device's anchor artifact (the ratio of the
    two holds when the shared machine's load moves both), on the device through `runner` (cached)."""
    cache = PipelineCache(job.cache_root)
    cached = cached_record(cache, job.key)
    if cached is not None:
        return {"ok": True, **cached, "computed": False}
    try:
        value = _time(job, runner)
    except DeployKitError as exc:
        return {"ok": False, "reason": f"latency on {job.device.name}: {exc.message}"}
    cache.store_measurement(job.key, value)
    return {"ok": True, **value, "computed": True}


def _time(job: LatencyJob, runner) -> dict:
    calls = {"trial": _loaded(runner, job.artifact, job.device, job.batch)}
    itself = job.anchor is not None and Path(job.anchor).resolve() == Path(job.artifact).resolve()
    if job.anchor is not None and not itself:
        calls["anchor"] = _loaded(runner, job.anchor, job.device, job.batch)
    stats = runner.latency(calls, runs=job.runs, warmup=job.warmup)
    trial = stats["trial"]
    anchor = trial if itself else stats.get("anchor")  # the anchor's own row: timed once, ratio 1
    return {"p50_ms": trial.p50_ms, "p90_ms": trial.p90_ms, "spread": trial.spread, "runs": trial.runs,
            "batch": job.batch, "anchor_p50_ms": anchor.p50_ms if anchor else None,
            "vs_anchor": trial.p50_ms / anchor.p50_ms if anchor else None,
            "load_average": os.getloadavg()[0], **_where()}


def _loaded(runner, path: Path, device: Device, batch: int):
    from deploykit.core.manifest import Manifest, manifest_path

    runnable, _ = runner.load(Path(path), device)
    if runnable.static_batch not in (None, batch):
        raise DeployKitError(f"{Path(path).name} is fixed to batch {runnable.static_batch}, not {batch}",
                             fix="set profile.batches to the exported batch")
    preprocess = Manifest.read(manifest_path(path)).preprocessing()
    shape = (batch, preprocess.num_channels, preprocess.input_size, preprocess.input_size)
    probe = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    runner.warm_up(runnable, probe, 3)
    return runnable, probe


def _where() -> dict:
    """Which node and process did the work (the results show it per trial)."""
    try:
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except ImportError:
        node = None
    return {"node_id": node, "pid": os.getpid(), "hostname": os.uname().nodename}
