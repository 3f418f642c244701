"""The server's own routes: health, metrics, this API's document, and the repository's files.

Only ``metadata/`` and ``targets/`` of the repository are served (never the
key folders or ``repo.json``; see :mod:`suture.server.http.static_files`).
Any web server or CDN can serve the same files instead (docs/adr/0014).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from suture.errors import RefusedError, UsageError
from suture.server.db import instances, queries, rollouts
from suture.server.fleet import health, maintenance, metrics, views
from suture.server.fleet.rollout import Policy, halted_count
from suture.server.http import models, static_files
from suture.server.http.replies import Reply
from suture.server.http.routing import Call, Doc, Endpoint

LIVE = 3 * maintenance.EVERY  # s: a process that reported within this is running


def healthz(call: Call) -> Reply:
    """200 when the database answers and the repository's metadata loads and has not expired."""
    ok, checks = health.check(call.fleet)
    return Reply({"format": 1, "ok": ok, "checks": checks}, status=200 if ok else 503)


def prometheus(call: Call) -> Reply:
    """Prometheus metrics: the fleet's gauges, the server's own, the requests of every process."""
    fleet = call.fleet
    now = fleet.now()
    snaps = instances.snapshots(fleet.store)
    snaps[fleet.instance_id] = (now, fleet.requests.snapshot())
    requests = metrics.merged(data for _, data in snaps.values())
    groups = queries.groups(fleet.store, views.cutoff(now, views.INACTIVE_AFTER))
    meta = fleet.catalog.metadata()
    halts = {
        c: halted_count(Policy.from_dict(p)) for c, p in rollouts.policies(fleet.store).items()
    }
    lines = metrics.fleet_lines(groups, metrics.checkins(requests))
    lines += metrics.server_lines(
        expires=meta.expires,
        metadata_error=meta.error,
        halts=halts,
        processes=sum(1 for seen, _ in snaps.values() if seen >= now - LIVE),
        db=fleet.store.dialect,
        now=now,
    )
    lines += metrics.request_lines(requests)
    return Reply(body=metrics.render(lines), media_type=metrics.CONTENT_TYPE)


def _static(area: str) -> Callable[[Call], Reply]:
    def serve(call: Call) -> Reply:
        rel = call.params["path"]
        try:
            found = static_files.resolve(call.fleet.layout, area, rel)
        except static_files.BadPath as e:
            raise UsageError(str(e)) from e
        if found is None:
            raise RefusedError(f"no such file {area}/{rel[:200]}", reason="not_found")
        return Reply(
            file=found.path,
            media_type=found.content_type,
            headers={"Cache-Control": found.cache_control},
        )

    serve.__doc__ = f"A file of the repository's {area}/."
    return serve


def endpoints(api: Callable[[], dict[str, Any]]) -> list[Endpoint]:
    """These routes; ``api`` gives the document served at ``/openapi.json``."""
    files = {
        200: {
            "application/json": {"type": "string"},
            "application/octet-stream": {"type": "string", "format": "binary"},
        },
        400: models.Error,
        404: models.Error,
    }
    return [
        Endpoint(
            "GET",
            "/healthz",
            healthz,
            doc=Doc(
                "the database answers, the repository's metadata loads and has not expired",
                {200: models.Health, 503: models.Health},
            ),
        ),
        Endpoint(
            "GET",
            "/metrics",
            prometheus,
            doc=Doc(
                "Prometheus metrics (text exposition format 0.0.4), of every server process",
                {200: {"text/plain": {"type": "string"}}},
            ),
        ),
        Endpoint(
            "GET",
            "/openapi.json",
            lambda call: Reply(api()),
            doc=Doc("this document", {200: {"application/json": {"type": "object"}}}),
        ),
        Endpoint(
            "GET",
            "/metadata/{path:path}",
            _static("metadata"),
            doc=Doc("TUF metadata (N.role.json, timestamp.json)", files),
        ),
        Endpoint(
            "GET",
            "/targets/{path:path}",
            _static("targets"),
            doc=Doc("a target under its hash-prefixed name", files),
        ),
    ]
