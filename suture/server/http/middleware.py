"""What every request passes through: its id, its log line and metrics, and common headers.

A plain ASGI wrapper (no framework middleware stack): it names the request
(``X-Request-Id``: the client's when sane, else a new one), adds the headers
every answer carries (``nosniff``; HSTS when the request came over TLS,
directly or through a trusted proxy), counts the request by route pattern
for ``/metrics``, and writes one access-log line with control characters
escaped.
"""

from __future__ import annotations

import re
import secrets
import time

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from suture.server.fleet.context import Fleet
from suture.server.http.routing import ROUTE_KEY
from suture.server.log import request_id

HSTS = "max-age=31536000"  # one year; no includeSubDomains: the server knows only its own name
_SANE_ID = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")


class Frontdoor:
    """The ASGI app in front of the routes (see the module docstring)."""

    def __init__(self, app: ASGIApp, fleet: Fleet, *, access_log: bool = True) -> None:
        self.app = app
        self.fleet = fleet
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request (other scopes, the lifespan, pass through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        rid = given.decode() if _SANE_ID.match(given) else secrets.token_hex(8)
        token = request_id.set(rid)
        secure = scope.get("scheme") == "https"
        status = 0
        start = time.perf_counter()

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-Id"] = rid
                headers.setdefault("X-Content-Type-Options", "nosniff")
                if secure:
                    headers["Strict-Transport-Security"] = HSTS
            await send(message)

        try:
            await self.app(scope, receive, answer)
        finally:
            took = time.perf_counter() - start
            route = scope.get(ROUTE_KEY, "unmatched")
            self.fleet.requests.observe(route, scope["method"], status, took)
            if self.access_log:
                client = scope.get("client") or ("-", 0)
                query = scope.get("query_string", b"").decode("latin-1")
                target = scope["path"] + (f"?{query}" if query else "")
                version = scope.get("http_version", "1.1")
                line = f'{client[0]} "{scope["method"]} {target[:500]} HTTP/{version}" {status}'
                self.fleet.log.info(line, ms=round(took * 1000, 2))
            request_id.reset(token)
