"""Routes as data: an :class:`Endpoint` table that :func:`routes` turns into Starlette routes.

Each endpoint says its method, its path, who may call it, its body and
query models and its answers (for the document).

A handler is a plain function of a :class:`Call` (the request, checked) that
returns a :class:`~suture.server.http.replies.Reply` or a JSON-ready dict.
It runs in a worker thread (the store is synchronous), after the caller was
authorized and the body and query passed their models; anything refused on
the way is answered here, the same way for every route:

- ``public``: anyone (enrolment, health, metrics, the dashboard's pages,
  which check their own sessions);
- ``host``: an agent's own token (``Authorization: Bearer sht_...``);
- ``admin``: the operators' admin token, and an address that did not fail
  too often lately (:mod:`suture.server.fleet.limits`).

One Starlette route per path takes every method, so that a method no
endpoint of that path takes gets a JSON 405 with every allowed method in
``Allow`` (RFC 9110), and the route's pattern labels the request's metrics.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, parse_qsl

import anyio.to_thread
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from suture.contract import checkin as contract
from suture.contract.enrolment import HOST_TOKEN_PREFIX
from suture.errors import CheckinError, FormatError, RefusedError, SutureError, UsageError
from suture.server.fleet import enrolment, limits
from suture.server.fleet.context import Fleet
from suture.server.http import models
from suture.server.http.replies import Reply, error, from_error, refused

ROUTE_KEY = "suture.route"  # the scope key that names the route pattern (metrics, access log)
METHODS_WITH_BODY = ("POST", "PUT", "DELETE", "PATCH")


class Auth(StrEnum):
    """Who may call a route."""

    PUBLIC = "public"
    HOST = "host"
    ADMIN = "admin"


@dataclass(frozen=True)
class HostAuth:
    """The host a token speaks for."""

    host_id: str
    tags: tuple[str, ...]


@dataclass
class Call:
    """What a handler sees of a request, checked."""

    fleet: Fleet
    method: str
    path: str
    params: dict[str, str]
    query: Any = None  # the query model, when the endpoint has one
    body: Any = None  # what its body parser made of the body
    form: dict[str, str] = field(default_factory=dict)  # an HTML form's fields
    host: HostAuth | None = None
    address: str = ""
    scheme: str = "http"
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    cookies: Mapping[str, str] = field(default_factory=dict)
    query_string: str = ""

    def bearer(self) -> str:
        """The bearer token of the request, or ""."""
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""


class ModelBody:
    """A JSON body validated by a pydantic model; the handler gets the model."""

    def __init__(self, model: type[BaseModel], *, optional: bool = False) -> None:
        self.model = model
        self.optional = optional  # an empty body reads as {}

    def parse(self, data: Any) -> Any:
        """The model of ``data``.

        Raises:
            FormatError: a field is refused (``field`` names it).
        """
        return validate(self.model, data)


class CheckinBody:
    """A check-in: format 1, 2 or 3 by its ``format``; the handler gets a contract Checkin."""

    optional = False
    forms = (models.Checkin, models.Checkin2, models.Checkin1)  # format 3, 2, 1
    _BY_FORM: Mapping[type, type[BaseModel]] = {
        contract.Checkin3: models.Checkin,
        contract.Checkin2: models.Checkin2,
        contract.Checkin1: models.Checkin1,
    }

    def parse(self, data: Any) -> contract.Checkin:
        """The check-in.

        Raises:
            CheckinError: refused (``field`` names what).
        """
        model = self._BY_FORM[contract.form_of(data)]
        try:
            validate(model, data)
        except FormatError as e:
            raise CheckinError(e.message, field=e.field) from e
        # Strict and closed: what passed is exactly a document of the form.
        return contract.accept(data)


Body = ModelBody | CheckinBody
Handler = Callable[[Call], Reply | dict[str, Any]]


@dataclass(frozen=True)
class Doc:
    """How the API document describes an endpoint."""

    summary: str
    answers: Mapping[int, Any]  # status -> a model, or {media type: schema} (200 only)
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Endpoint:
    """One method on one path: who may call it, what it takes, what it answers."""

    method: str
    path: str  # with {name} for a path segment, {name:path} for the rest of it
    handler: Handler
    auth: Auth = Auth.PUBLIC
    body: Body | None = None
    query: type[BaseModel] | None = None
    form: bool = False  # an HTML form body (the dashboard)
    own_query: bool = False  # the handler reads the query string itself (the dashboard)
    host_lookup: bool = True  # False: a host route whose handler looks its token up itself
    doc: Doc | None = None  # None: not in the API document (the dashboard's pages)
    refused_as: str = "UsageError"  # the error name of a refused body or query


def validate(model: type[BaseModel], data: Any, what: str = "field") -> BaseModel:
    """``data`` as ``model``.

    Raises:
        FormatError: the first refused field, named as in the document (``patches[0]``).
    """
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = first["loc"]
        if loc[-1:] == ("[key]",):  # a bad key of a dict field: name the dict, as the contract does
            loc = loc[:-2]
        name = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(
            "."
        )
        if first["type"] == "missing":
            message = f"missing {what} {name}"
        elif first["type"] == "extra_forbidden":
            message = f"unknown {what} {name[:80]}"
        elif not name:
            message = f"the body is not an object: {first['msg']}"
        else:
            message = f"{name}: {first['msg']}"
        raise FormatError(message, field=name[:80]) from e


def _json(headers: Mapping[str, str], raw: bytes, optional: bool) -> Any:
    if optional and not raw.strip():
        return {}
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise RefusedError(
            "send JSON (Content-Type: application/json)", reason="unsupported_media_type"
        )
    try:
        return json.loads(raw or b"null", parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as e:
        raise FormatError(f"the body is not JSON: {str(e)[:200]}") from e


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _query(model: type[BaseModel] | None, raw: str) -> Any:
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, max_num_fields=50)
    except ValueError as e:
        raise UsageError(f"the query string is refused: {e}") from e
    found: dict[str, str] = {}
    for name, value in pairs:
        if name in found:
            raise FormatError(
                f"query parameter {name[:40]} is given more than once", field=name[:40]
            )
        found[name] = value
    if model is None:
        if found:
            name = next(iter(found))[:40]
            raise FormatError(f"unknown query parameter {name}", field=name)
        return None
    return validate(model, found, "query parameter")


def _form(headers: Mapping[str, str], raw: bytes) -> dict[str, str]:
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return {}
    try:
        fields = parse_qs(raw.decode(), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in fields.items()}


def _authorize(fleet: Fleet, endpoint: Endpoint, call: Call) -> None:
    auth = endpoint.auth
    if auth is Auth.PUBLIC:
        return
    token = call.bearer()
    if auth is Auth.ADMIN:
        if fleet.admin_token is None:
            raise RefusedError(
                "this server has no admin token: start it with --admin-token-file",
                reason="no_admin_token",
            )
        if not token:  # not a guess: nothing to count
            raise RefusedError("an admin token is needed", reason="unauthorized")
        limits.check(fleet, limits.ADMIN, call.address)
        if not hmac.compare_digest(token.encode(), fleet.admin_token.encode()):
            limits.failed(fleet, limits.ADMIN, call.address)
            raise RefusedError("an admin token is needed", reason="unauthorized")
        return
    found = None
    if token.startswith(HOST_TOKEN_PREFIX):
        if not endpoint.host_lookup:
            return  # its handler reads the token with the rest (one transaction)
        found = enrolment.host_for_token(fleet, token)
    if found is None:
        raise RefusedError(
            "a host token is needed: register with a registration key first",
            reason="unauthorized",
        )
    call.host = HostAuth(*found)


async def _read_body(receive: Receive, scope: Scope, limit: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length" and int(value) > limit:
            raise RefusedError(f"a request body is at most {limit} bytes", reason="too_large")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RefusedError(f"a request body is at most {limit} bytes", reason="too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class PathApp:
    """The endpoints of one path, by method (an ASGI app)."""

    def __init__(self, fleet: Fleet, path: str, endpoints: list[Endpoint]) -> None:
        self.fleet = fleet
        self.path = path
        self.by_method = {e.method: e for e in endpoints}
        allowed = set(self.by_method) | ({"HEAD"} if "GET" in self.by_method else set())
        self.allow = ", ".join(sorted(allowed))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request."""
        scope[ROUTE_KEY] = self.path
        method = scope["method"]
        endpoint = self.by_method.get("GET" if method == "HEAD" else method)
        if endpoint is None:
            reply = error(HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed", f"use {self.allow}")
            reply.headers["Allow"] = self.allow
            body_too = method in METHODS_WITH_BODY
            await respond(reply, scope, receive, send, close=body_too)
            return
        request = Request(scope, receive)
        try:
            raw = b""
            if method in METHODS_WITH_BODY:
                raw = await _read_body(receive, scope, self.fleet.limits.max_body)
        except RefusedError as e:
            await respond(refused(e), scope, receive, send, close=True)
            return
        call = Call(
            fleet=self.fleet,
            method=method,
            path=scope["path"],
            params=dict(request.path_params),
            address=request.client.host if request.client else "",
            scheme=scope.get("scheme", "http"),
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            cookies=request.cookies,
            query_string=scope.get("query_string", b"").decode("latin-1"),
        )
        reply = await anyio.to_thread.run_sync(run, endpoint, call, raw)
        await respond(reply, scope, receive, send)


def run(endpoint: Endpoint, call: Call, raw: bytes) -> Reply:
    """Authorize, check the query and body, call the handler; every refusal answered here."""
    fleet = call.fleet
    try:
        _authorize(fleet, endpoint, call)
        if not endpoint.own_query:
            call.query = _query(endpoint.query, call.query_string)
        if endpoint.body is not None:
            call.body = endpoint.body.parse(_json(call.headers, raw, endpoint.body.optional))
        elif endpoint.form:
            call.form = _form(call.headers, raw)
        reply = endpoint.handler(call)
    except SutureError as e:
        answer = from_error(e, endpoint.refused_as)
        if answer.status >= 500 and answer.status != HTTPStatus.SERVICE_UNAVAILABLE:
            fleet.log.exception("request failed", path=call.path[:200], error=e.message)
        return answer
    except Exception:  # a bug in a route: a JSON 500 and the traceback in the log
        fleet.log.exception("request failed", path=call.path[:200])
        return error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal", "the server failed; see its log")
    return reply if isinstance(reply, Reply) else Reply(reply)


async def respond(
    reply: Reply, scope: Scope, receive: Receive, send: Send, *, close: bool = False
) -> None:
    """Send a reply."""
    headers = {"Cache-Control": "no-store", **reply.headers}
    if close:
        headers["Connection"] = "close"
    if reply.file is not None:
        response: Response = FileResponse(
            reply.file, status_code=reply.status, media_type=reply.media_type, headers=headers
        )
    else:
        response = Response(
            reply.encoded(), status_code=reply.status, media_type=reply.media_type, headers=headers
        )
    await response(scope, receive, send)


def routes(fleet: Fleet, endpoints: list[Endpoint]) -> list[Route]:
    """The Starlette routes of an endpoint table: one per path, taking every method."""
    by_path: dict[str, list[Endpoint]] = {}
    for e in endpoints:
        by_path.setdefault(e.path, []).append(e)
        if len(by_path[e.path]) != len({x.method for x in by_path[e.path]}):
            raise ValueError(f"{e.method} {e.path} is declared twice")
    return [Route(path, PathApp(fleet, path, found)) for path, found in by_path.items()]
