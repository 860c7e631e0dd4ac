"""What the agent checks before FastAPI sees a request: a pure ASGI middleware (no body is read here).

FastAPI reads and parses a JSON body before any dependency runs, so a token check written as a dependency
comes too late: 400 MiB sent without a token were read and parsed first (+850 MB of memory). This gate runs
first, on the request head alone:

- every path but `GET /health` needs the bearer token; a request without it is answered 401 at once and
  its body is never read (uvicorn buffers at most 64 KiB of it, then closes the connection);
- every body has a cap: the upload cap for artifacts and batches, `MAX_JSON_BYTES` for everything else. A
  declared Content-Length over it is answered 413 at once; a body without one (chunked) is counted as it
  arrives and cut off at the cap the same way;
- at most `max_inflight` requests are served at once (503 busy beyond it); `/health` answers from memory
  and is always served, so liveness never waits behind the work.
"""

from __future__ import annotations

import json
import re
from typing import Callable

MAX_JSON_BYTES = 64 * 1024  # a load or measure request is a few hundred bytes
_UPLOADS = (re.compile(r"/artifacts/[^/]*"), re.compile(r"/models/[^/]*/run"))
PUBLIC = {("GET", "/health"), ("HEAD", "/health")}


class RequestGate:
    """ASGI middleware: authenticate, cap the body and bound the concurrency before the app runs."""

    def __init__(self, app, *, authorize: Callable[[str | None], bool], max_upload_bytes: int,
                 max_inflight: int, upload_fix: str) -> None:
        self.app, self.authorize = app, authorize
        self.max_upload_bytes, self.max_inflight, self.upload_fix = max_upload_bytes, max_inflight, upload_fix
        self.inflight = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await _answer(send, *refusal)
            return
        public = (scope["method"], scope["path"]) in PUBLIC
        self.inflight += 0 if public else 1
        try:
            await _Capped(self.app, self._limit(scope), self.upload_fix)(scope, receive, send)
        finally:
            self.inflight -= 0 if public else 1

    def _refusal(self, scope) -> tuple | None:
        """(status, error, fix, headers) to answer without running the app, or None."""
        if (scope["method"], scope["path"]) in PUBLIC:
            return None
        headers = _headers(scope)
        if not self.authorize(headers.get("authorization")):
            return (401, "missing or wrong agent token", "send `Authorization: Bearer TOKEN` with the token the "
                    "agent printed at start (or the contents of its --token-file)", {"www-authenticate": "Bearer"})
        declared, limit = headers.get("content-length"), self._limit(scope)
        if declared is not None and not declared.isdigit():
            return 400, "invalid Content-Length", None, {}
        if declared is not None and int(declared) > limit:
            return _too_large(declared, limit, self._fix(scope))
        if self.inflight >= self.max_inflight:
            return (503, f"busy: {self.inflight} requests in progress", "retry later", {"retry-after": "1"})
        return None

    def _limit(self, scope) -> int:
        return self.max_upload_bytes if _is_upload(scope) else MAX_JSON_BYTES

    def _fix(self, scope) -> str | None:
        return self.upload_fix if _is_upload(scope) else None


class _Capped:
    """The app with its request body counted as it arrives: past `limit`, the client gets 413 and the app
    sees a disconnect (whatever it answers then is dropped)."""

    def __init__(self, app, limit: int, fix: str) -> None:
        self.app, self.limit, self.fix = app, limit, fix
        self.received, self.started, self.refused = 0, False, False

    async def __call__(self, scope, receive, send) -> None:
        async def counted_receive():
            if self.refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.limit:
                    self.refused = True
                    if not self.started:
                        await _answer(send, *_too_large(f"more than {self.limit}", self.limit, self.fix))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if self.refused:
                return
            self.started = self.started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted_receive, guarded_send)


def _is_upload(scope) -> bool:
    return any(p.fullmatch(scope["path"]) for p in _UPLOADS) and scope["method"] in ("PUT", "POST")


def _too_large(size: str, limit: int, fix: str | None) -> tuple:
    return 413, f"request body of {size} bytes refused: the limit here is {limit} bytes", fix, {}


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _answer(send, status: int, error: str, fix: str | None, headers: dict) -> None:
    """A JSON error in the shape FastAPI's HTTPException gives ({"detail": {"error", "fix"}}), closing the
    connection: the body the client may still be sending is not read."""
    body = json.dumps({"detail": {"error": error, **({"fix": fix} if fix else {})}}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close")] + [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
