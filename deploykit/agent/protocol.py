"""uvicorn's h11 protocol with the two connection limits it lacks, for the agent.

uvicorn times out idle keep-alive connections only after a first response, and its `limit_concurrency`
counts open connections: 128 sockets that connect and never send a request head made the agent answer 503
to everyone for as long as they stayed open. Here instead:

- a connection must deliver a complete request head within `head_timeout_s` of being opened (or of its
  previous response), else it is closed. Bytes trickling in do not extend the deadline (slowloris), and
  h11 caps a head at 16 KiB;
- at most `max_connections` are open at once; beyond that a new connection is closed as soon as it is
  accepted, and the idle ones free their places within `head_timeout_s`;
- `limit_concurrency` is not used: requests in progress are bounded by the agent's own gate
  (`guard.RequestGate`), which always lets `/health` through.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 256


class GuardedH11Protocol(H11Protocol):
    head_timeout_s: float = HEAD_TIMEOUT_S
    max_connections: int = MAX_CONNECTIONS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self.logger.warning("refused a connection: %d already open", len(self.connections) - 1)
            transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # a whole request head arrived: the app has the request now
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._arm()  # waiting for the next request head (a pipelined one would have started a cycle)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if getattr(self, "_head_deadline", None) is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.logger.info("closed a connection that sent no complete request head in %g s", self.head_timeout_s)
            self.transport.close()


def guarded_protocol(head_timeout_s: float, max_connections: int) -> type[GuardedH11Protocol]:
    """The protocol class for uvicorn's `http=` setting, with these limits."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"head_timeout_s": head_timeout_s, "max_connections": max_connections})
