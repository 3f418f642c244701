"""Fleet queries for operators (admin token): exposure to a CVE, summaries, exports, OpenVEX.

The work is done in :mod:`suture.server.queries` (shared with the
dashboard); these routes read and check the query parameters and shape the
answers. Unknown query parameters are refused: a misspelt filter must not
quietly answer with the whole fleet.

(Routes register themselves with :func:`suture.server.api.route` when this module loads.)
"""

from __future__ import annotations

import csv
import io
from http import HTTPStatus
from typing import Any

from suture.errors import UsageError
from suture.server import metrics, queries, vex
from suture.server.api import Context, Reply, Request, refuse, route
from suture.server.checkin import STATES

HOST_FILTERS = ("release", "build_id", "level", "state", "status", "tag", "channel", "cve")
EXPORT_COLUMNS = (
    "host_id",
    "hostname",
    "release",
    "build_id",
    "channel",
    "level",
    "state",
    "active",
    "tags",
    "cves_fixed",
    "last_seen",
)


def _only(req: Request, *names: str) -> None:
    for name, values in req.query.items():
        if name not in names:
            raise UsageError(
                f"unknown query parameter {name[:40]!r}", hint=f"use {', '.join(names) or 'none'}"
            )
        if len(values) > 1:
            raise UsageError(f"query parameter {name} is given more than once")


def _int(req: Request, name: str, low: int, high: int) -> int | None:
    text = req.arg(name)
    if name not in req.query:
        return None
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise UsageError(f"{name} is not an integer from {low} to {high}")
    return int(text)


def _inactive_after(req: Request) -> int:
    found = _int(req, "inactive_after", 1, queries.MAX_INACTIVE_AFTER)
    return queries.INACTIVE_AFTER if found is None else found


def _cve(text: str) -> str:
    if not queries.CVE_ID.fullmatch(text):
        raise UsageError(f"cve {text[:80]!r} is not a vulnerability id", hint="e.g. CVE-2026-1234")
    return text


def _text(req: Request, name: str, limit: int = 128) -> str:
    value = req.arg(name)
    if len(value) > limit:
        raise UsageError(f"{name} is longer than {limit} characters")
    return value


@route("GET", "/api/v1/hosts", "admin")
def hosts(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """Hosts with their last report and tags; filters combine (AND).

    ``cve`` keeps the hosts exposed to it; ``status`` is the state, or
    ``inactive`` for hosts silent for ``inactive_after`` seconds (3 h).
    """
    _only(req, *HOST_FILTERS, "inactive_after")
    state, status = req.arg("state"), req.arg("status")
    if state and state not in STATES:
        raise UsageError(f"state is not one of {', '.join(STATES)}")
    if status and status not in queries.STATUSES:
        raise UsageError(f"status is not one of {', '.join(queries.STATUSES)}")
    f = queries.HostFilter(
        release=_text(req, "release"),
        build_id=_text(req, "build_id"),
        level=_int(req, "level", 0, 1_000_000),
        state=state,
        status=status,
        tag=_text(req, "tag", 64),
        channel=_text(req, "channel", 32),
        cve=_cve(req.arg("cve")) if req.arg("cve") else "",
        inactive_after=_inactive_after(req),
    )
    found = queries.hosts(ctx.store, ctx.catalog, f, ctx.clock())
    return Reply(data={"format": 1, "hosts": found})


@route("GET", "/api/v1/exposed", "admin")
def exposed(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """Hosts exposed to a CVE now, hosts whose build has no fix for it, hosts fixed."""
    _only(req, "cve", "inactive_after")
    if not req.arg("cve"):
        raise UsageError("cve is missing", hint="e.g. /api/v1/exposed?cve=CVE-2026-1234")
    cve = _cve(req.arg("cve"))
    data = queries.exposure(ctx.store, ctx.catalog, cve, ctx.clock(), _inactive_after(req))
    return Reply(data=data)


@route("GET", "/api/v1/summary", "admin")
def summary(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """Hosts per (kernel build, level, state), failures, unsupported and inactive counts."""
    _only(req, "inactive_after")
    return Reply(data=queries.summary(ctx.store, ctx.clock(), _inactive_after(req)))


@route("GET", "/api/v1/export", "admin")
def export(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """Every host with its kernel, level, state, tags and CVEs fixed in memory (CSV or JSON)."""
    _only(req, "format", "inactive_after")
    fmt = req.arg("format", "json")
    if fmt not in ("csv", "json"):
        raise UsageError("format is not csv or json")
    rows = queries.export(ctx.store, ctx.catalog, ctx.clock(), _inactive_after(req))
    if fmt == "json":
        return Reply(data={"format": 1, "hosts": rows})
    return Reply(body=_csv(rows), content_type="text/csv; charset=utf-8")


def _csv(rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for r in rows:
        flat = {
            **r,
            **r["kernel"],
            "tags": " ".join(r["tags"]),
            "cves_fixed": " ".join(r["cves_fixed"]),
        }
        writer.writerow([_cell(flat[c]) for c in EXPORT_COLUMNS])
    return out.getvalue().encode()


def _cell(value: object) -> str:
    text = "true" if value is True else "false" if value is False else str(value)
    # A cell a spreadsheet would run as a formula is quoted as text (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@route("GET", "/api/v1/hosts/{host_id}/vex", "admin")
def host_vex(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """The host's OpenVEX document, signed by the server.

    ``format=signed`` (default): the document, the base64 Ed25519 signature
    over its canonical bytes, and the public key. ``format=openvex``: the
    canonical bytes themselves, the signature in ``X-Suture-Signature``.
    """
    _only(req, "format")
    fmt = req.arg("format", "signed")
    if fmt not in ("signed", "openvex"):
        raise UsageError("format is not signed or openvex")
    if ctx.vex_key is None:
        raise refuse(HTTPStatus.SERVICE_UNAVAILABLE, "no_signing_key", "this server signs no VEX")
    found = ctx.store.hosts("h.host_id = ?", (params["host_id"],))
    if not found:
        raise refuse(HTTPStatus.NOT_FOUND, "not_found", "no such host")
    doc = vex.document(found[0], ctx.catalog, queries.stamp(ctx.clock()))
    signed = vex.sign(ctx.vex_key, doc)
    if fmt == "signed":
        return Reply(data=signed)
    headers = {
        "X-Suture-Signature": signed["signature"],
        "X-Suture-Public-Key": signed["public_key"],
    }
    return Reply(body=vex.canonical(doc), headers=headers)


@route("GET", "/api/v1/vex-key", "public")
def vex_key(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """The public key that OpenVEX signatures verify with."""
    _only(req)
    if ctx.vex_key is None:
        raise refuse(HTTPStatus.SERVICE_UNAVAILABLE, "no_signing_key", "this server signs no VEX")
    return Reply(data=vex.key_info(ctx.vex_key))


@route("GET", "/metrics", "public")
def prometheus(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """Prometheus metrics: the fleet's gauges, then the server's request metrics."""
    cutoff = queries.stamp(ctx.clock() - queries.INACTIVE_AFTER)
    lines = metrics.fleet_lines(queries.groups(ctx.store, cutoff), ctx.requests.checkins())
    body = metrics.render(lines + ctx.requests.lines())
    return Reply(body=body, content_type=metrics.CONTENT_TYPE)
