"""What the agent's worker thread does, one call at a time: load an artifact in the device's runtime, run a
batch, measure latency. A runtime failure comes back as a StoreError naming it, never an opaque 500."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from deploykit.agent.store import ArtifactStore, StoredArtifact, StoreError
from deploykit.core.errors import DeployKitError


@dataclass
class Loaded:
    runnable: object
    info: dict


def load_model(store: ArtifactStore, stored: StoredArtifact, settings: dict) -> Loaded:
    from deploykit import runtimes
    from deploykit.core.devices import Device

    try:
        device = Device(location="local", name="agent", **settings)
    except (ValueError, TypeError) as exc:
        raise StoreError(422, f"invalid device settings: {exc}") from exc
    reason = runtimes.unavailable(device.runtime)
    if reason:
        raise StoreError(422, f"runtime {device.runtime} cannot run on this device: {reason}")
    build_start = time.perf_counter()
    path = store.runnable_path(stored, device.runtime)
    build_s = time.perf_counter() - build_start
    start = time.perf_counter()
    runnable = runtimes.load(path, device)
    load_ms = 1e3 * (time.perf_counter() - start)
    info = {"runtime": device.runtime, "version": runnable.version, "static_batch": runnable.static_batch,
            "precision_used": runnable.precision_used, "load_ms": load_ms, "prepare_s": build_s}
    return Loaded(runnable, info)


def run_model(runnable, batch: np.ndarray, repeat: int) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    for _ in range(repeat):
        out = runnable.run(batch)
    return np.ascontiguousarray(out, dtype=np.float32), 1e3 * (time.perf_counter() - start)


def measure(items: list[tuple[object, list[int]]], runs: int, warmup: int, seed: int) -> list[dict]:
    """Latency of each (runnable, input shape), timed in alternating blocks, on seeded normal inputs."""
    from deploykit.profile.latency import measure_side_by_side

    calls = {}
    for i, (runnable, shape) in enumerate(items):
        batch = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
        calls[str(i)] = (lambda r=runnable, b=batch: r.run(b))
    stats = measure_side_by_side(calls, runs=runs, warmup=warmup)
    return [stats[str(i)].to_dict() for i in range(len(items))]


def guarded(fn: Callable) -> Callable:
    """A runtime failure becomes a StoreError naming it (422 ours, 500 a backend's), not an opaque 500."""
    def call(*args):
        try:
            return fn(*args)
        except StoreError:
            raise
        except DeployKitError as exc:
            raise StoreError(422, str(exc)) from exc
        except Exception as exc:  # backends raise their own types
            raise StoreError(500, f"the runtime failed: {type(exc).__name__}: {exc}") from exc
    return call
