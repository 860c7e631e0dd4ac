"""Ray behind one adapter: starting or joining a cluster, the tasks, the measuring actors, the tracker.

- In-process by default (`ray.init` starts a private local instance: nothing to set up). It is a
  local-only instance (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, Ray's own switch for "no multi-node
  cluster"): its node address is 127.0.0.1 and every process listens on loopback only. Ray's
  `--node-ip-address=127.0.0.1` does not do that on Linux (measured: Ray moved to the machine's private
  address and listened on it).
- `address` joins an existing cluster (`ray start --head` + nodes); its CPUs are its own. The cache
  folder and the data must be at the same paths on every node (one machine, or a shared filesystem).
- Builds and evaluations are tasks of one CPU each, retried when their worker dies (`RETRIES`).
- Measuring actors: one per device, so two measurements never share a device. The local devices are one
  CPU (host-cpu-ort and host-cpu-openvino are the same cores), so they share one actor, pinned to the
  driver's node; a remote device has its own, talking to its agent.
- The tracker actor hears every attempt start: what is running now, and what ran more than once (a retry).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import dataclass

from deploykit.core.devices import Device
from deploykit.core.errors import DeployKitError, import_backend

RETRIES = 3  # attempts after the first, for a task whose worker process or node died
ACTOR_RESTARTS = 3
LOCAL_ACTOR = "local"
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@dataclass
class RayContext:
    ray: object
    tracker: object
    task: object  # the remote wrapper of `run_tracked`
    actors: dict  # actor key -> handle
    driver_node: str
    in_process: bool

    def nodes(self) -> list[str]:
        return sorted(n["NodeID"] for n in self.ray.nodes() if n.get("Alive"))

    def actor_for(self, device: Device):
        return self.actors[actor_key(device)]


def actor_key(device: Device) -> str:
    return LOCAL_ACTOR if device.is_local else device.name


def start(devices: dict[str, Device], *, address: str | None = None, workers: int | None = None) -> RayContext:
    """Start Ray in-process (`workers` CPUs, default all) or join the cluster at `address`."""
    if address is not None and workers is not None:
        raise DeployKitError("--workers caps the CPUs of the in-process Ray; a cluster's nodes bring their own",
                             fix="drop --workers, or drop --address")
    if workers is not None and workers < 1:
        raise DeployKitError(f"--workers {workers}: at least one", fix="pass --workers 1 or more")
    ray = _import_ray(local_only=address is None)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:
        ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
    else:
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise DeployKitError(f"cannot join the Ray cluster at {address}: {exc}",
                                 fix="start it with `ray start --head`, or check the address") from exc
    driver_node = ray.get_runtime_context().get_node_id()
    tracker_name = f"deploykit-sweep-tracker-{uuid.uuid4().hex}"  # looked up by name: restartable actors
    tracker = ray.remote(num_cpus=0)(Tracker).options(name=tracker_name).remote()  # take no handles
    task = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)(run_tracked)
    actors = _actors(ray, devices, tracker_name, driver_node)
    return RayContext(ray, tracker, task, actors, driver_node, address is None)


def _import_ray(*, local_only: bool):
    if local_only:
        os.environ[LOCAL_ONLY_ENV] = "0"  # read by Ray at import and by every process it starts
    ray = import_backend("ray", "sweep")
    if local_only and "ray._private.ray_constants" in sys.modules:  # imported before we set the switch
        sys.modules["ray._private.ray_constants"].ENABLE_RAY_CLUSTER = False
    return ray


def _actors(ray, devices: dict[str, Device], tracker: str, driver_node: str) -> dict:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(num_cpus=0, max_restarts=ACTOR_RESTARTS, max_task_retries=RETRIES)(DeviceActor)
    actors = {}
    for device in devices.values():
        key = actor_key(device)
        if key not in actors:
            here = NodeAffinitySchedulingStrategy(driver_node, soft=False) if device.is_local else "DEFAULT"
            actors[key] = remote.options(scheduling_strategy=here).remote(key, tracker)
    return actors


def stop(ctx: RayContext) -> None:
    ctx.ray.shutdown()


# --- what runs in Ray's processes -----------------------------------------------------------------

def run_tracked(fn, label: str, tracker, job, after=None) -> dict:
    """`fn(job)`, told to the tracker first (each attempt). `after`: a result this one waits for (Ray
    resolves it before the call), unused here."""
    _report_start(tracker, label)
    return fn(job)


def _report_start(tracker, label: str) -> None:
    """Ray's own attempt number (0, then 1 for the first retry): a worker killed before it could report
    its start still shows as the retry's attempt 1. Waits for the tracker, so no report is left queued."""
    import ray

    ray.get(tracker.started.remote(label, ray.get_runtime_context().get_node_id(), os.getpid(), _attempt(ray)))


def _attempt(ray) -> int | None:
    """The running task's attempt number; Ray has it on its core worker only (no public API in 2.60)."""
    try:
        return int(ray._private.worker.global_worker.core_worker.get_current_task_attempt_number())
    except (AttributeError, TypeError, ValueError):
        return None


class DeviceActor:
    """Runs measurements for one device (or for this machine's local devices), one call at a time."""

    def __init__(self, key: str, tracker: str) -> None:
        import ray

        self.key, self.tracker, self.runners = key, ray.get_actor(tracker), {}

    def _runner(self, device: Device):
        from deploykit.pipeline.runners import reach_device

        if device.name not in self.runners:
            self.runners[device.name] = reach_device(device)
        return self.runners[device.name]

    def _started(self, label: str) -> None:
        _report_start(self.tracker, label)

    def measure(self, label: str, job, after=None) -> dict:
        from deploykit.pipeline.sweep_work import measure_latency

        self._started(label)
        return measure_latency(job, self._runner(job.device))

    def evaluate(self, label: str, job, after=None) -> dict:
        """Accuracy on a remote device goes through its agent, so it is the device's work too."""
        from deploykit.pipeline.sweep_work import evaluate_artifact

        self._started(label)
        return evaluate_artifact(job, self._runner(job.device))


class Tracker:
    def __init__(self) -> None:
        self.starts: dict[str, list[dict]] = {}

    def started(self, label: str, node: str, pid: int, attempt: int | None = None) -> None:
        self.starts.setdefault(label, []).append({"node_id": node, "pid": pid, "attempt": attempt,
                                                  "time": time.time()})

    def snapshot(self) -> dict[str, list[dict]]:
        return self.starts


__all__ = ["RETRIES", "RayContext", "actor_key", "run_tracked", "start", "stop"]
