"""What `profile_artifacts` measures of each row, once every artifact and float original is loaded: warm-up,
accuracy and agreement on the same inputs (accuracy counted by `profile.accuracy`), latency per batch size
(one runtime's rows timed in alternating blocks, an unstable p50 measured once more, then flagged) and
energy where the machine has a counter."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from deploykit import runtimes
from deploykit.core.compare import compare_outputs
from deploykit.core.errors import DeployKitError
from deploykit.core.manifest import Manifest
from deploykit.core.preprocess import Preprocess
from deploykit.data.datasets import open_dataset
from deploykit.data.loader import batches as data_batches
from deploykit.data.loader import sample_indices
from deploykit.pipeline.evaluate import resolve_data
from deploykit.pipeline.runners import LOCAL, Runner, bound_run
from deploykit.profile.accuracy import logits_accuracy
from deploykit.profile.results import BatchLatency, Energy, ProfileRow, Quality

Progress = Callable[[str, int, int], None]  # (what, done, total)
EVAL_BATCH = 32
PROBE_IMAGES = 64  # inputs for agreement when no --data is given: seeded random images
UNSTABLE_SPREAD = 0.10  # two runs of one profile should agree on p50 within this
LATENCY_ATTEMPTS = 2  # an unstable latency is measured once more before it is reported as unstable


@dataclass
class Candidate:
    """A row being measured: its runnable and the preprocessing its inputs go through."""

    row: ProfileRow
    runnable: runtimes.Runnable
    preprocess: Preprocess
    manifest: Manifest | None = None
    reference: "Candidate | None" = None
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


def random_inputs(preprocess: Preprocess, batch: int, seed: int = 0) -> np.ndarray:
    shape = (batch, preprocess.num_channels, preprocess.input_size, preprocess.input_size)
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def warm_up(candidates: list[Candidate], warmup: int, progress: Progress) -> None:
    """Time the first `warmup` runs (at least one: lazy initialisation shows up here); the output's width
    is the number of classes, which the float original is built with."""
    for i, candidate in enumerate(candidates):
        progress(f"warming up {candidate.row.name}", i, len(candidates))
        probe = random_inputs(candidate.preprocess, candidate.static_batch or 1)
        seconds, out = candidate.runner.warm_up(candidate.runnable, probe, max(1, warmup))
        candidate.row.warmup_ms = 1e3 * seconds
        candidate.num_classes = int(np.asarray(out).reshape(len(probe), -1).shape[1])
        candidate.row.precision_used = candidate.runnable.precision_used


def measure_quality(candidates: list[Candidate], data: Path | None, limit: int | None,
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


def _groups(candidates: list[Candidate]) -> list[list[Candidate]]:
    groups: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        groups.setdefault(candidate.group, []).append(candidate)
    return list(groups.values())


def _run_inputs(group: list[Candidate], preprocess: Preprocess, data: Path | None, limit: int | None,
                progress: Progress) -> tuple[int, np.ndarray | None, str]:
    """Feed every candidate the same batches; keep their outputs. (images, labels or None, description)."""
    if data is None:
        stream = ((random_inputs(preprocess, PROBE_IMAGES, seed=1), None),)
        total, description = PROBE_IMAGES, f"random probe ({PROBE_IMAGES} images, seed 1; no --data)"
    else:
        path = resolve_data(Path(data))
        dataset = open_dataset(path)
        total = len(sample_indices(len(dataset), limit))
        stream = data_batches(dataset, preprocess, EVAL_BATCH, limit=limit)
        description = f"{data} ({total} of {len(dataset)} images)" if total < len(dataset) else f"{data} ({total} images)"
    predicts = [runtimes.predictor(c.runnable) for c in group]
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


def _quality(candidate: Candidate, n: int, labels: np.ndarray | None, inputs: str) -> Quality:
    logits = np.concatenate(candidate.outputs)
    top = logits_accuracy(logits, labels) if labels is not None else None
    top1, top5 = (top.top1, top.top5) if top is not None else (None, None)
    if candidate.reference is None:
        return Quality(n, inputs, top1, top5)
    stats = compare_outputs(np.concatenate(candidate.reference.outputs), logits, "fp32")
    return Quality(n, inputs, top1, top5, stats.top1_agreement, stats.cosine, stats.sqnr_db, stats.max_rel_err)


def measure_latency(candidates: list[Candidate], batches: list[int], runs: int, warmup: int,
                     progress: Progress) -> None:
    """Per batch size, every candidate that can run it: those of one runtime timed in alternating blocks,
    runtimes one after the other (the float original's torch thread pool would otherwise compete with the
    device runtime's for the same cores)."""
    for batch in batches:
        able = [c for c in candidates if c.static_batch in (None, batch)]
        inputs = {c.group: random_inputs(c.preprocess, batch) for c in able}
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


def measure_energy(candidates: list[Candidate], counter, source: str, progress: Progress) -> None:
    from deploykit.profile import energy

    for i, candidate in enumerate(candidates):
        if counter is not None:
            progress("energy", i, len(candidates))
        batch = candidate.static_batch or 1
        run = bound_run(candidate.runnable, random_inputs(candidate.preprocess, batch))
        reading = energy.measure_energy(counter, source, run, images=batch)
        candidate.row.energy = Energy(reading.joules_per_image, reading.source)
