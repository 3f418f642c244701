"""Fleet queries for operators (admin token): hosts, exposure to a CVE, summary, export, OpenVEX.

The work is done in :mod:`suture.server.fleet.views` (shared with the
dashboard); these routes shape the answers. Lists come a page at a time
(``limit``, 200 by default, and the ``next_cursor`` of the page before).
Unknown query parameters are refused: a misspelt filter must not quietly
answer with the whole fleet.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from suture.errors import RefusedError
from suture.server.db import hosts
from suture.server.fleet import paging, vex, views
from suture.server.http import models
from suture.server.http.replies import Reply
from suture.server.http.routing import Auth, Call, Doc, Endpoint

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
    "cves_partial",
    "last_seen",
)
NEXT_CURSOR = "X-Next-Cursor"  # where a CSV page says where the next one starts


def _inactive(value: int | None) -> int:
    return views.INACTIVE_AFTER if value is None else value


def list_hosts(call: Call) -> dict[str, Any]:
    """Hosts with their last report and tags; filters combine (AND).

    ``cve`` keeps the hosts exposed to it; ``status`` is the state, or
    ``inactive`` for hosts silent for ``inactive_after`` seconds (3 h).
    """
    q: models.HostsQuery = call.query
    query = views.HostQuery(
        release=q.release,
        build_id=q.build_id,
        level=q.level,
        state=q.state or "",
        status=q.status or "",
        tag=q.tag,
        channel=q.channel,
        cve=q.cve or "",
        inactive_after=_inactive(q.inactive_after),
    )
    fleet = call.fleet
    return views.hosts_page(
        fleet.store,
        fleet.catalog,
        query,
        fleet.now(),
        cursor=q.cursor or "",
        limit=q.limit or paging.DEFAULT_LIMIT,
    )


def exposed(call: Call) -> dict[str, Any]:
    """Hosts exposed to a CVE now, partly fixed, whose builds have no fix for it, fixed."""
    q: models.ExposedQuery = call.query
    fleet = call.fleet
    return views.exposure(
        fleet.store,
        fleet.catalog,
        q.cve,
        fleet.now(),
        inactive_after=_inactive(q.inactive_after),
        kind=q.kind or "",
        cursor=q.cursor or "",
        limit=q.limit or paging.DEFAULT_LIMIT,
    )


def summary(call: Call) -> dict[str, Any]:
    """Hosts per (kernel build, level, state), failures, unsupported and inactive counts."""
    q: models.InactiveQuery = call.query
    return views.summary(call.fleet.store, call.fleet.now(), _inactive(q.inactive_after))


def export(call: Call) -> Reply:
    """A page of every host with kernel, level, state, tags and CVEs fixed (JSON or CSV)."""
    q: models.ExportQuery = call.query
    fleet = call.fleet
    rows, more = views.export_page(
        fleet.store,
        fleet.catalog,
        fleet.now(),
        inactive_after=_inactive(q.inactive_after),
        cursor=q.cursor or "",
        limit=q.limit or paging.DEFAULT_LIMIT,
    )
    if q.format == "json":
        return Reply({"format": 1, "hosts": rows, "next_cursor": more})
    headers = {NEXT_CURSOR: more} if more else {}
    return Reply(body=_csv(rows), media_type="text/csv; charset=utf-8", headers=headers)


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
            "cves_partial": " ".join(r["cves_partial"]),
        }
        writer.writerow([_cell(flat[c]) for c in EXPORT_COLUMNS])
    return out.getvalue().encode()


def _cell(value: object) -> str:
    text = "true" if value is True else "false" if value is False else str(value)
    # A cell a spreadsheet would run as a formula is quoted as text (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def host_vex(call: Call) -> Reply:
    """The host's OpenVEX document, signed by the server.

    ``format=signed`` (default): the document, the base64 Ed25519 signature
    over its canonical bytes, and the public key. ``format=openvex``: the
    canonical bytes themselves, the signature in ``X-Suture-Signature``.
    """
    q: models.VexQuery = call.query
    fleet = call.fleet
    if fleet.vex_key is None:
        raise RefusedError("this server signs no VEX", reason="no_signing_key")
    record = hosts.get(fleet.store, call.params["host_id"])
    if record is None:
        raise RefusedError("no such host", reason="not_found")
    doc = vex.document(record, fleet.catalog, hosts.stamp(fleet.now()))
    signed = vex.sign(fleet.vex_key, doc)
    if q.format == "signed":
        return Reply(signed)
    headers = {
        "X-Suture-Signature": signed["signature"],
        "X-Suture-Public-Key": signed["public_key"],
    }
    return Reply(body=vex.canonical(doc), headers=headers)


def vex_key(call: Call) -> dict[str, Any]:
    """The public key that OpenVEX signatures verify with."""
    if call.fleet.vex_key is None:
        raise RefusedError("this server signs no VEX", reason="no_signing_key")
    return vex.key_info(call.fleet.vex_key)


E = models.Error

ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/v1/hosts",
        list_hosts,
        auth=Auth.ADMIN,
        query=models.HostsQuery,
        doc=Doc(
            "a page of hosts with their last report; filters combine", {200: models.HostsAnswer}
        ),
    ),
    Endpoint(
        "GET",
        "/api/v1/exposed",
        exposed,
        auth=Auth.ADMIN,
        query=models.ExposedQuery,
        doc=Doc(
            "hosts exposed to a CVE now, partly fixed (some processes), with no fix for their "
            "build, fixed (a page of each, or with kind, the next page of one)",
            {200: models.ExposedAnswer},
        ),
    ),
    Endpoint(
        "GET",
        "/api/v1/summary",
        summary,
        auth=Auth.ADMIN,
        query=models.InactiveQuery,
        doc=Doc(
            "hosts per (kernel build, level, state); failures; totals", {200: models.SummaryAnswer}
        ),
    ),
    Endpoint(
        "GET",
        "/api/v1/export",
        export,
        auth=Auth.ADMIN,
        query=models.ExportQuery,
        doc=Doc(
            "a page of every host with kernel, level, state, tags, CVEs fixed in memory; "
            f"as CSV, the next page's cursor is in {NEXT_CURSOR}",
            {200: {"application/json": models.ExportAnswer, "text/csv": {"type": "string"}}},
        ),
    ),
    Endpoint(
        "GET",
        "/api/v1/hosts/{host_id}/vex",
        host_vex,
        auth=Auth.ADMIN,
        query=models.VexQuery,
        doc=Doc(
            "the host's OpenVEX document, signed by the server (Ed25519)",
            {
                200: {"application/json": {"oneOf": [models.SignedVex, models.OpenVEX]}},
                404: E,
                503: E,
            },
        ),
    ),
    Endpoint(
        "GET",
        "/api/v1/vex-key",
        vex_key,
        doc=Doc("the public key OpenVEX signatures verify with", {200: models.VexKey, 503: E}),
    ),
]
