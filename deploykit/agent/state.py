"""The agent's state behind its endpoints: its settings, its store, the models it keeps loaded and the one
lock every runtime call takes (see `agent/server.py` for the rules), and the HTTP errors it answers with."""

from __future__ import annotations

import asyncio
import hmac
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fastapi import HTTPException

from deploykit.agent.facts import device_facts, runtime_facts
from deploykit.agent.protocol import HEAD_TIMEOUT_S, MAX_CONNECTIONS
from deploykit.agent.store import ArtifactStore, StoreError
from deploykit.agent.work import Loaded, guarded
from deploykit.core.errors import DeployKitError


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
            raise http_error(503, f"busy: the agent runs one measurement at a time and the ones before this "
                              f"request took longer than the queue timeout "
                              f"({self.config.queue_timeout_s:g} s)",
                         "retry later, or start the agent with a longer --queue-timeout",
                         headers={"Retry-After": "1"}) from None
        task = asyncio.ensure_future(asyncio.to_thread(guarded(fn), *args))
        task.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.config.request_timeout_s)
        except asyncio.TimeoutError:
            raise http_error(504, f"the device did not finish within the request timeout "
                              f"({self.config.request_timeout_s:g} s); the work goes on and holds the queue "
                              f"until it ends", "start the agent with a longer --request-timeout") from None
        except StoreError as exc:
            raise http_error(exc.status, exc.message) from None

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
            raise too_large(self.config, declared) if declared.isdigit() else \
                http_error(400, "invalid Content-Length")
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
                    raise too_large(self.config, f"more than {limit}")
                sink(chunk)
        except asyncio.TimeoutError:
            raise http_error(408, f"request body stalled (nothing for {self.config.idle_timeout_s:g} s, or "
                              f"not all of it within {self.config.request_timeout_s:g} s)") from None
        except ClientDisconnect:
            raise http_error(400, "the client disconnected before sending the whole body") from None
        finally:
            await stream.aclose()

    def remember(self, model_id: str, loaded: Loaded) -> None:
        self.models[model_id] = loaded
        self.models.move_to_end(model_id)
        while len(self.models) > self.config.max_loaded:
            self.models.popitem(last=False)


def too_large(config: ServeConfig, size: str):
    return http_error(413, f"request body of {size} bytes refused: the agent's limit is {config.max_upload_mb:g} MiB",
                      "start the agent with a larger --max-upload-mb")


def http_error(status: int, message: str, fix: str | None = None, *,
               headers: dict | None = None) -> HTTPException:
    """An answer the client can act on: {"detail": {"error": ..., "fix": ...}}."""
    return HTTPException(status, detail={"error": message, **({"fix": fix} if fix else {})}, headers=headers)
