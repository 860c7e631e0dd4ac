"""The agent's HTTP server (FastAPI, run by uvicorn): stores artifacts, loads them in the device's runtime,
runs batches and measures latency there. See `deploykit.agent` for the protocol.

One measurement at a time: everything that touches a runtime (load, run, measure) runs in a worker thread
behind one asyncio lock. A request waits for the lock at most `queue_timeout_s` (then 503 busy) and for
its work at most `request_timeout_s` (then 504; the lock stays held until the work really ends, so the
next measurement never overlaps it). Uploads stream into the store without the lock.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from deploykit.agent.facts import SERVED_RUNTIMES, device_facts, runtime_facts
from deploykit.agent.guard import RequestGate
from deploykit.agent.protocol import HEAD_TIMEOUT_S, MAX_CONNECTIONS, guarded_protocol
from deploykit.agent.store import ArtifactStore, StoredArtifact, StoreError
from deploykit.agent.wire import (ELAPSED_HEADER, NPY_TYPE, PROTOCOL, WireError, is_sha256, npy_array,
                                  npy_bytes)
from deploykit.core.errors import DeployKitError

log = logging.getLogger("uvicorn.error.deploykit")  # a child of uvicorn's: shown where uvicorn's log is
MAX_RUNS, MAX_WARMUP, MAX_REPEAT, MAX_ITEMS = 10_000, 1_000, 1_000, 16


@dataclass(frozen=True)
class ServeConfig:
    store: Path
    token: str
    host: str = "127.0.0.1"
    port: int = 8765
    max_upload_mb: float = 1024.0
    queue_timeout_s: float = 120.0
    request_timeout_s: float = 900.0  # a load (a TensorRT engine build), a run or a measurement
    idle_timeout_s: float = 30.0  # the longest wait for the next piece of a request body
    head_timeout_s: float = HEAD_TIMEOUT_S  # from connecting (or the last answer) to a complete request head
    max_connections: int = MAX_CONNECTIONS
    max_inflight: int = 64  # requests in progress at once, /health aside (503 busy beyond)
    max_loaded: int = 4  # models kept loaded between requests
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def __post_init__(self) -> None:
        if len(self.token) < 16:
            raise DeployKitError("the agent token is shorter than 16 characters",
                                 fix="put a long random token in the --token-file (`openssl rand -hex 32`)")
        for name in ("max_upload_mb", "queue_timeout_s", "request_timeout_s", "idle_timeout_s", "head_timeout_s",
                     "max_connections", "max_inflight", "max_loaded"):
            if getattr(self, name) <= 0:
                raise DeployKitError(f"{name} must be positive, got {getattr(self, name)}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise DeployKitError("TLS needs both --tls-cert and --tls-key")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


@dataclass
class Loaded:
    runnable: object
    info: dict


class Agent:
    """The state behind the endpoints: store, loaded models, the measurement lock."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.store = ArtifactStore(config.store)
        self.store.claim()
        self.swept = self.store.sweep()
        self.facts = {"device": device_facts(), "runtimes": runtime_facts()}
        self.models: OrderedDict[str, Loaded] = OrderedDict()
        self.lock = asyncio.Lock()

    def authorize(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(),
                                                                  self.config.token.encode())

    async def exclusive(self, fn: Callable, *args):
        """`fn(*args)` in a worker thread, one at a time (see the module docstring). A StoreError or
        DeployKitError from `fn` becomes the answer's status and message."""
        try:  # wait_for, not asyncio.timeout: Python 3.10 (JetPack 6) has no asyncio.timeout
            await asyncio.wait_for(self.lock.acquire(), self.config.queue_timeout_s)
        except asyncio.TimeoutError:
            raise _error(503, f"busy: the agent runs one measurement at a time and the ones before this "
                              f"request took longer than the queue timeout "
                              f"({self.config.queue_timeout_s:g} s)",
                         "retry later, or start the agent with a longer --queue-timeout",
                         headers={"Retry-After": "1"}) from None
        task = asyncio.ensure_future(asyncio.to_thread(_guarded(fn), *args))
        task.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.config.request_timeout_s)
        except asyncio.TimeoutError:
            raise _error(504, f"the device did not finish within the request timeout "
                              f"({self.config.request_timeout_s:g} s); the work goes on and holds the queue "
                              f"until it ends", "start the agent with a longer --request-timeout") from None
        except StoreError as exc:
            raise _error(exc.status, exc.message) from None

    def _release(self, task: asyncio.Future) -> None:
        self.lock.release()
        if not task.cancelled():
            task.exception()  # retrieved here, so an answer that timed out does not log it as lost

    async def receive(self, request, sink: Callable[[bytes], None]) -> None:
        """Feed the request body to `sink` piece by piece, refusing it past the upload cap (counted as it
        arrives: a Content-Length can lie or be absent), when the client stalls for `idle_timeout_s` and when
        the whole body takes longer than `request_timeout_s`."""
        limit, loop = self.config.max_upload_bytes, asyncio.get_running_loop()
        deadline = loop.time() + self.config.request_timeout_s
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise _too_large(self.config, declared) if declared.isdigit() else \
                _error(400, "invalid Content-Length")
        from starlette.requests import ClientDisconnect

        stream, size = request.stream(), 0
        try:
            while True:
                wait = min(self.config.idle_timeout_s, deadline - loop.time())
                try:
                    chunk = await asyncio.wait_for(anext(stream), max(wait, 0.0))
                except StopAsyncIteration:
                    return
                size += len(chunk)
                if size > limit:
                    raise _too_large(self.config, f"more than {limit}")
                sink(chunk)
        except asyncio.TimeoutError:
            raise _error(408, f"request body stalled (nothing for {self.config.idle_timeout_s:g} s, or "
                              f"not all of it within {self.config.request_timeout_s:g} s)") from None
        except ClientDisconnect:
            raise _error(400, "the client disconnected before sending the whole body") from None
        finally:
            await stream.aclose()

    def remember(self, model_id: str, loaded: Loaded) -> None:
        self.models[model_id] = loaded
        self.models.move_to_end(model_id)
        while len(self.models) > self.config.max_loaded:
            self.models.popitem(last=False)


# --- work done in the worker thread -----------------------------------------------------------------

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


# --- the app --------------------------------------------------------------------------------------

class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str
    runtime: str
    precision: str | None = None
    compute_units: str | None = None
    threads: int | None = Field(None, ge=1, le=1024)


class MeasureItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    shape: list[int] = Field(min_length=4, max_length=4)


class MeasureRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[MeasureItem] = Field(min_length=1, max_length=MAX_ITEMS)
    runs: int = Field(ge=1, le=MAX_RUNS)
    warmup: int = Field(0, ge=0, le=MAX_WARMUP)
    seed: int = Field(0, ge=0, le=2**32 - 1)


def create_app(config: ServeConfig):
    agent = Agent(config)
    app = FastAPI(title="deploykit agent", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.agent = agent

    def require_token(request: Request) -> None:
        if not agent.authorize(request.headers.get("authorization")):
            raise _error(401, "missing or wrong agent token",
                         "send `Authorization: Bearer TOKEN` with the token the agent printed at start (or "
                         "the contents of its --token-file)", headers={"WWW-Authenticate": "Bearer"})

    @app.get("/health")
    def health() -> dict:
        """Liveness only: what the device is and runs is for clients with the token (/info)."""
        return {"ok": True, "protocol": PROTOCOL}

    router = APIRouter(dependencies=[Depends(require_token)])  # (the gate checked it already: kept as a 2nd lock)

    @router.get("/info")
    def info() -> dict:
        return {"protocol": PROTOCOL, "agent": _deploykit_version(), **agent.facts, "busy": agent.lock.locked(),
                "artifacts": agent.store.count(), "max_upload_bytes": config.max_upload_bytes}

    @router.api_route("/artifacts/{sha256}", methods=["GET", "HEAD"])
    def artifact_info(sha256: str) -> dict:
        stored = agent.store.find(_sha(sha256))
        if stored is None:
            raise _error(404, f"no artifact {sha256} in the store")
        return stored.to_dict()

    @router.put("/artifacts/{sha256}", status_code=201)
    async def upload(sha256: str, request: Request, response: Response) -> dict:
        sha = _sha(sha256)
        if (stored := agent.store.find(sha)) is not None:
            response.status_code = 200
            return stored.to_dict()
        pending = agent.store.begin(config.max_upload_bytes)
        try:
            await agent.receive(request, pending.write)
            stored = await asyncio.to_thread(agent.store.commit, pending, sha)
        except StoreError as exc:
            raise _error(exc.status, exc.message) from None
        finally:
            pending.discard()
        log.info("stored %s (%s, %d bytes)", sha[:12], stored.kind, stored.size_bytes)
        return stored.to_dict()

    @router.post("/models")
    async def load(body: LoadRequest) -> dict:
        sha = _sha(body.sha256)
        if body.runtime not in SERVED_RUNTIMES:
            raise _error(422, f"runtime {body.runtime!r} is not served by the agent",
                         f"one of {', '.join(SERVED_RUNTIMES)} (a torch file is a pickle: never loaded from "
                         f"a client)")
        stored = agent.store.find(sha)
        if stored is None:
            raise _error(404, f"no artifact {sha} in the store", "upload it first: PUT /artifacts/{sha256}")
        cores = os.cpu_count() or 1
        if body.threads is not None and body.threads > cores:
            raise _error(422, f"threads {body.threads} is more than this device's {cores} logical cores",
                         f"ask for at most {cores} threads (the device YAML's `threads:`)")
        settings = body.model_dump(exclude={"sha256"})
        key = json.dumps({"sha256": sha, **settings}, sort_keys=True)
        model_id = hashlib.sha256(key.encode()).hexdigest()
        if model_id not in agent.models:
            agent.remember(model_id, await agent.exclusive(load_model, agent.store, stored, settings))
            log.info("loaded %s in %s", sha[:12], body.runtime)
        return {"model": model_id, "sha256": sha, **agent.models[model_id].info}

    @router.post("/models/{model_id}/run")
    async def run(model_id: str, request: Request, repeat: int = 1) -> Response:
        loaded = _loaded(agent, model_id)
        if not 1 <= repeat <= MAX_REPEAT:
            raise _error(422, f"repeat must be in 1..{MAX_REPEAT}, got {repeat}")
        body = bytearray()
        await agent.receive(request, body.extend)
        try:
            batch = npy_array(bytes(body), ndim=4)
        except WireError as exc:
            raise _error(400, str(exc)) from None
        out, elapsed_ms = await agent.exclusive(run_model, loaded.runnable, batch, repeat)
        return Response(npy_bytes(out), media_type=NPY_TYPE, headers={ELAPSED_HEADER: f"{elapsed_ms:.6f}"})

    @router.post("/measure")
    async def measure_latency(body: MeasureRequest) -> dict:
        items, total = [], 0
        for item in body.items:
            total += 4 * math.prod(item.shape)  # float32 inputs generated here: all of them held at once
            if min(item.shape) < 1 or total > config.max_upload_bytes:
                raise _error(422, f"input shape {item.shape} is empty, or the inputs of all items add up to more "
                                  f"than the upload limit ({config.max_upload_bytes} bytes)")
            items.append((_loaded(agent, item.model).runnable, item.shape))
        latency = await agent.exclusive(measure, items, body.runs, body.warmup, body.seed)
        return {"latency": latency}

    app.include_router(router)
    app.add_middleware(RequestGate, authorize=agent.authorize, max_upload_bytes=config.max_upload_bytes,
                       max_inflight=config.max_inflight, upload_fix="start the agent with a larger --max-upload-mb")
    return app


def _guarded(fn: Callable) -> Callable:
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


def _too_large(config: ServeConfig, size: str):
    return _error(413, f"request body of {size} bytes refused: the agent's limit is "
                       f"{config.max_upload_mb:g} MiB",
                  "start the agent with a larger --max-upload-mb")


def _loaded(agent: Agent, model_id: str) -> Loaded:
    loaded = agent.models.get(_sha(model_id, what="model id"))
    if loaded is None:
        raise _error(404, f"model {model_id} is not loaded (the agent restarted or unloaded it)",
                     "load it again: POST /models")
    return loaded


def _sha(text: str, *, what: str = "sha256") -> str:
    if not is_sha256(text):
        raise _error(400, f"invalid {what}: expected 64 lower-case hex digits")
    return text


def _error(status: int, message: str, fix: str | None = None, *,
           headers: dict | None = None) -> HTTPException:
    return HTTPException(status, detail={"error": message, **({"fix": fix} if fix else {})}, headers=headers)


def _deploykit_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("deploykit")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def uvicorn_config(app, config: ServeConfig, **overrides):
    """uvicorn's settings for the agent: h11 with a request-head deadline and a connection cap (see
    agent/protocol.py), a 5 s keep-alive, no `limit_concurrency` (it counted idle sockets)."""
    import uvicorn

    tls = {"ssl_certfile": str(config.tls_cert), "ssl_keyfile": str(config.tls_key)} \
        if config.tls_cert else {}
    settings = {"host": config.host, "port": config.port, "timeout_keep_alive": 5, "log_level": "info",
                "http": guarded_protocol(config.head_timeout_s, config.max_connections), **tls, **overrides}
    return uvicorn.Config(app, **settings)


def run_server(app, config: ServeConfig) -> None:
    """Serve `app` until interrupted (uvicorn handles SIGINT and SIGTERM)."""
    import uvicorn

    uvicorn.Server(uvicorn_config(app, config)).run()
