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
import json
import logging
import math
import os

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from deploykit.agent import work
from deploykit.agent.facts import SERVED_RUNTIMES
from deploykit.agent.guard import RequestGate
from deploykit.agent.protocol import guarded_protocol
from deploykit.agent.state import Agent, ServeConfig, http_error
from deploykit.agent.store import StoreError
from deploykit.agent.wire import ELAPSED_HEADER, NPY_TYPE, PROTOCOL, WireError, is_sha256, npy_array, npy_bytes
from deploykit.agent.work import Loaded

__all__ = ["ServeConfig", "create_app", "run_server", "uvicorn_config"]
log = logging.getLogger("uvicorn.error.deploykit")  # a child of uvicorn's: shown where uvicorn's log is
MAX_RUNS, MAX_WARMUP, MAX_REPEAT, MAX_ITEMS = 10_000, 1_000, 1_000, 16


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
            raise http_error(401, "missing or wrong agent token",
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
            raise http_error(404, f"no artifact {sha256} in the store")
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
            raise http_error(exc.status, exc.message) from None
        finally:
            pending.discard()
        log.info("stored %s (%s, %d bytes)", sha[:12], stored.kind, stored.size_bytes)
        return stored.to_dict()

    @router.post("/models")
    async def load(body: LoadRequest) -> dict:
        sha = _sha(body.sha256)
        if body.runtime not in SERVED_RUNTIMES:
            raise http_error(422, f"runtime {body.runtime!r} is not served by the agent",
                         f"one of {', '.join(SERVED_RUNTIMES)} (a torch file is a pickle: never loaded from "
                         f"a client)")
        stored = agent.store.find(sha)
        if stored is None:
            raise http_error(404, f"no artifact {sha} in the store", "upload it first: PUT /artifacts/{sha256}")
        cores = os.cpu_count() or 1
        if body.threads is not None and body.threads > cores:
            raise http_error(422, f"threads {body.threads} is more than this device's {cores} logical cores",
                         f"ask for at most {cores} threads (the device YAML's `threads:`)")
        settings = body.model_dump(exclude={"sha256"})
        key = json.dumps({"sha256": sha, **settings}, sort_keys=True)
        model_id = hashlib.sha256(key.encode()).hexdigest()
        if model_id not in agent.models:
            agent.remember(model_id, await agent.exclusive(work.load_model, agent.store, stored, settings))
            log.info("loaded %s in %s", sha[:12], body.runtime)
        return {"model": model_id, "sha256": sha, **agent.models[model_id].info}

    @router.post("/models/{model_id}/run")
    async def run(model_id: str, request: Request, repeat: int = 1) -> Response:
        loaded = _loaded(agent, model_id)
        if not 1 <= repeat <= MAX_REPEAT:
            raise http_error(422, f"repeat must be in 1..{MAX_REPEAT}, got {repeat}")
        body = bytearray()
        await agent.receive(request, body.extend)
        try:
            batch = npy_array(bytes(body), ndim=4)
        except WireError as exc:
            raise http_error(400, str(exc)) from None
        out, elapsed_ms = await agent.exclusive(work.run_model, loaded.runnable, batch, repeat)
        return Response(npy_bytes(out), media_type=NPY_TYPE, headers={ELAPSED_HEADER: f"{elapsed_ms:.6f}"})

    @router.post("/measure")
    async def measure_latency(body: MeasureRequest) -> dict:
        items, total = [], 0
        for item in body.items:
            total += 4 * math.prod(item.shape)  # float32 inputs generated here: all of them held at once
            if min(item.shape) < 1 or total > config.max_upload_bytes:
                raise http_error(422, f"input shape {item.shape} is empty, or the inputs of all items add up to more "
                                  f"than the upload limit ({config.max_upload_bytes} bytes)")
            items.append((_loaded(agent, item.model).runnable, item.shape))
        latency = await agent.exclusive(work.measure, items, body.runs, body.warmup, body.seed)
        return {"latency": latency}

    app.include_router(router)
    app.add_middleware(RequestGate, authorize=agent.authorize, max_upload_bytes=config.max_upload_bytes,
                       max_inflight=config.max_inflight, upload_fix="start the agent with a larger --max-upload-mb")
    return app


def _loaded(agent: Agent, model_id: str) -> Loaded:
    loaded = agent.models.get(_sha(model_id, what="model id"))
    if loaded is None:
        raise http_error(404, f"model {model_id} is not loaded (the agent restarted or unloaded it)",
                     "load it again: POST /models")
    return loaded


def _sha(text: str, *, what: str = "sha256") -> str:
    if not is_sha256(text):
        raise http_error(400, f"invalid {what}: expected 64 lower-case hex digits")
    return text


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
