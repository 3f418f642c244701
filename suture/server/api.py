"""The server's routes beyond static files: a request in, a reply out, no HTTP plumbing.

Each route is a plain function ``(request, context, params) -> Reply``,
registered with :func:`route` under a method, a path pattern and who may
call it:

- ``public``: anyone (registration with a registration key, health);
- ``host``: an agent with its own host token (``Authorization: Bearer sht_...``);
  it may only speak for its own host id;
- ``admin``: the operator's admin token.

``httpd`` turns HTTP requests into :class:`Request` objects and replies into
responses; tests can call :func:`dispatch` directly.
"""

from __future__ import annotations

import hmac
import json
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from suture.errors import CheckinError, DatabaseError, SutureError, UsageError
from suture.repo.layout import Layout
from suture.server.catalog import Catalog
from suture.server.metrics import RequestMetrics
from suture.server.sessions import Sessions
from suture.server.store import Store

MAX_BODY = 64 * 1024  # bytes of any request body
AUTHS = ("public", "host", "admin")


@dataclass
class Request:
    """What a route sees of an HTTP request."""

    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    address: str = ""
    host_id: str = ""  # set for ``host`` routes: who the token belongs to
    tags: tuple[str, ...] = ()

    def arg(self, name: str, default: str = "") -> str:
        """A query parameter's first value."""
        return self.query.get(name, [default])[0]

    def json(self) -> dict[str, Any]:
        """The body as a JSON object.

        Raises:
            UsageError: not JSON, or not an object.
        """
        if self.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise _RefusedError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send JSON"
            )
        try:
            data = json.loads(self.body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise UsageError(f"the body is not JSON: {e}") from e
        if not isinstance(data, dict):
            raise UsageError("the body is not a JSON object")
        return data


@dataclass
class Reply:
    """A route's answer: JSON ``data``, or a ``body`` of ``content_type``."""

    status: HTTPStatus = HTTPStatus.OK
    data: dict[str, Any] | None = None
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        """The bytes to send."""
        if self.data is not None:
            return json.dumps(self.data, sort_keys=True).encode() + b"\n"
        return self.body


@dataclass
class Context:
    """What routes work with: the database, the repository and its levels, the admin token."""

    store: Store
    layout: Layout
    catalog: Catalog
    admin_token: str | None = None
    log: Callable[[str], None] = print
    clock: Callable[[], float] = time.time
    requests: RequestMetrics = field(default_factory=RequestMetrics)  # for GET /metrics
    vex_key: Any = None  # the Ed25519PrivateKey that signs OpenVEX documents; None: no VEX
    sessions: Sessions = field(default_factory=Sessions)  # the dashboard's logins (in memory)


Handler = Callable[[Request, Context, dict[str, str]], Reply]
_ROUTES: list[tuple[str, re.Pattern[str], str, Handler]] = []
_PATTERNS: dict[re.Pattern[str], str] = {}  # regex -> the pattern it was made from (metrics)


def route(method: str, pattern: str, auth: str) -> Callable[[Handler], Handler]:
    """Register a handler for ``method`` on paths matching ``pattern`` (``{name}``: one segment)."""
    if auth not in AUTHS:
        raise ValueError(f"auth {auth!r} is not one of {AUTHS}")
    regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")

    def register(handler: Handler) -> Handler:
        _ROUTES.append((method, regex, auth, handler))
        _PATTERNS[regex] = pattern
        return handler

    return register


def known(path: str) -> bool:
    """True when some route serves ``path`` (for 405 against 404)."""
    _load_routes()
    return any(regex.match(path) for _, regex, _, _ in _ROUTES)


def pattern_of(path: str) -> str | None:
    """The pattern of the route that serves ``path`` (a label that cannot grow without bound)."""
    _load_routes()
    return next((_PATTERNS[rx] for _, rx, _, _ in _ROUTES if rx.match(path)), None)


def dispatch(ctx: Context, req: Request) -> Reply | None:
    """The reply of the route for ``req``; None when no route has its path."""
    _load_routes()
    matched = [(m, found, a, h) for m, rx, a, h in _ROUTES if (found := rx.match(req.path))]
    if not matched:
        return None
    for method, match, auth, handler in matched:
        if method == req.method or (method == "GET" and req.method == "HEAD"):
            return _call(ctx, req, auth, handler, match.groupdict())
    allowed = methods(req.path)
    reply = error(
        HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed", f"use {' or '.join(allowed)}"
    )
    reply.headers["Allow"] = ", ".join(allowed)  # RFC 9110: a 405 says what is allowed
    return reply


def methods(path: str) -> list[str]:
    """The methods the routes for ``path`` take (HEAD with GET); empty when none serves it."""
    _load_routes()
    found = {m for m, rx, _, _ in _ROUTES if rx.match(path)}
    return sorted(found | ({"HEAD"} if "GET" in found else set()))


def _call(ctx: Context, req: Request, auth: str, handler: Handler, params: dict[str, str]) -> Reply:
    """Authorize, run the route, and turn refusals and errors into replies."""
    try:
        _authorize(ctx, req, auth)
        return handler(req, ctx, params)
    except _RefusedError as e:
        return error(e.status, e.error, e.message)
    except (UsageError, CheckinError) as e:
        return error(HTTPStatus.BAD_REQUEST, type(e).__name__, e.message, e.to_dict())
    except DatabaseError as e:
        return error(HTTPStatus.SERVICE_UNAVAILABLE, "database", e.message)
    except SutureError as e:
        return error(HTTPStatus.INTERNAL_SERVER_ERROR, type(e).__name__, e.message)
    except Exception:  # a bug in a route: a JSON 500 and the traceback in the log
        ctx.log(f"{req.method} {req.path[:200]} failed:\n{traceback.format_exc()}")
        return error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal", "the server failed; see its log")


def error(
    status: HTTPStatus, kind: str, message: str, extra: dict[str, str] | None = None
) -> Reply:
    """A JSON error reply."""
    data = {**(extra or {}), "format": 1, "ok": False, "error": kind, "message": message}
    return Reply(status, data)


class _RefusedError(Exception):
    def __init__(self, status: HTTPStatus, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def refuse(status: HTTPStatus, error: str, message: str) -> Exception:
    """An exception a route raises to answer with an error."""
    return _RefusedError(status, error, message)


def _bearer(req: Request) -> str:
    scheme, _, token = req.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _authorize(ctx: Context, req: Request, auth: str) -> None:
    if auth == "public":
        return
    token = _bearer(req)
    if auth == "admin":
        if ctx.admin_token is None:
            raise _RefusedError(
                HTTPStatus.FORBIDDEN,
                "forbidden",
                "this server has no admin token: start it with --admin-token-file",
            )
        if not (token and hmac.compare_digest(token.encode(), ctx.admin_token.encode())):
            raise _RefusedError(HTTPStatus.UNAUTHORIZED, "unauthorized", "an admin token is needed")
        return
    from suture.server import fleetdb  # noqa: PLC0415 - routes load after the store

    found = fleetdb.host_for_token(ctx.store, token) if token.startswith("sht_") else None
    if found is None:
        raise _RefusedError(
            HTTPStatus.UNAUTHORIZED,
            "unauthorized",
            "a host token is needed: register with a registration key first",
        )
    req.host_id, req.tags = found


def parse_query(raw: str) -> dict[str, list[str]]:
    """A query string as lists of values."""
    return parse_qs(raw, keep_blank_values=True)


def _load_routes() -> None:
    # The route modules register themselves when imported.
    from suture.server import (  # noqa: F401, PLC0415
        routes_admin,
        routes_agent,
        routes_dashboard,
        routes_dashboard_rollouts,
        routes_query,
    )
