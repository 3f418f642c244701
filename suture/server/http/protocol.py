"""Connection limits uvicorn does not have: a deadline on each request, and a connection cap.

uvicorn (httptools) parses HTTP correctly and closes idle kept-alive
connections, but a connection that never finishes its request head is kept
as long as bytes trickle in, and nothing bounds how many connections are
open: a few hundred half-sent requests (slowloris) used up every file
descriptor. This protocol adds:

- a deadline to send a request's line and headers (``head_timeout``, from
  the connection or from the first byte after the last answer), then to send
  its body (``body_timeout``); a late request gets 408 and the connection is
  closed;
- a cap on the head's size (``max_head``: 431);
- a cap on open connections below the process's file limit: past it, the
  oldest connections that are idle or still sending a head are closed to
  make room, so a new client with a whole request always gets in, and the
  accept loop never meets EMFILE.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from suture.server.config import Limits

_408 = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)
_503 = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

HEAD, BODY, BUSY, IDLE = "head", "body", "busy", "idle"


def protocol_class(limits: Limits, cap: int) -> type[asyncio.Protocol]:
    """The protocol for one server: its limits, and at most ``cap`` connections."""

    class Guarded(GuardedProtocol):
        LIMITS = limits
        CAP = cap

    return Guarded


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines and a connection cap (module docstring)."""

    LIMITS = Limits()
    CAP = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phase = HEAD
        self.since = 0.0  # loop time the current wait (head, or idle) began
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # bytes received while in HEAD (a bound on junk without an end)
        self._head_size = 0  # bytes of the request line and headers, as parsed
        self._refused = False  # answered and closing: what is still parsed is dropped

    # --- the deadline of the phase under way ----------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _late(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.phase == HEAD:
            self.transport.write(_408)
        self.transport.close()

    def _refuse(self, answer: bytes) -> None:
        self._disarm()
        self._refused = True
        if not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()

    # --- uvicorn's protocol, with the phases tracked -----------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """A new connection: it has ``head_timeout`` to send a request; make room if full."""
        super().connection_made(transport)
        self.phase, self.since = HEAD, self.loop.time()
        self._arm(self.LIMITS.head_timeout)
        self._make_room()

    def _make_room(self) -> None:
        over = len(self.connections) - self.CAP
        if over <= 0:
            return
        waiting = sorted(
            (
                c
                for c in self.connections
                if isinstance(c, GuardedProtocol) and c is not self and c.phase in (HEAD, IDLE)
            ),
            key=lambda c: c.since,
        )
        for victim in waiting[:over]:
            victim.transport.close()
        if len(waiting) < over:  # everything else is busy with a request: this one waits outside
            self._refuse(_503)

    def data_received(self, data: bytes) -> None:
        """Bytes of a request: counted against the head's size and deadline."""
        if self._refused:
            return
        if self.phase == IDLE:  # the next request begins
            self.phase, self.since = HEAD, self.loop.time()
            self._head_bytes = self._head_size = 0
            self._arm(self.LIMITS.head_timeout)
        if self.phase == HEAD:
            self._head_bytes += len(data)
            if self._head_bytes > self.LIMITS.max_head + self.LIMITS.max_body:
                self._refuse(_431)
                return
        super().data_received(data)

    def _grow_head(self, size: int) -> bool:
        self._head_size += size
        if self._head_size > self.LIMITS.max_head:
            self._refuse(_431)
        return not self._refused

    def on_message_begin(self) -> None:
        """A request begins (pipelined ones too): its head is counted afresh."""
        self._head_size = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        """Part of the request target; the head may not grow past ``max_head``."""
        if self._grow_head(len(url)):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        """One header; the head may not grow past ``max_head``."""
        if self._grow_head(len(name) + len(value) + 4):
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """The head is in: the body has ``body_timeout``."""
        if self._refused:
            return
        self.phase = BODY
        self._arm(self.LIMITS.body_timeout)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        """Part of the body."""
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        """The request is in: no deadline while the server answers."""
        if self._refused:
            return
        self.phase = BUSY
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """Answered: idle until the next request (uvicorn's keep-alive timeout applies)."""
        super().on_response_complete()
        if self.phase == BUSY and (self.cycle is None or self.cycle.response_complete):
            self.phase, self.since = IDLE, self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        """Gone: no deadline left behind."""
        self._disarm()
        super().connection_lost(exc)
