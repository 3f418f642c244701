"""Is this server fit to serve: its database answers, and the repository's metadata is good.

Good: it loads, and no role has expired (agents refuse expired metadata, so
the fleet would stall until someone runs ``suture repo refresh``).
"""

from __future__ import annotations

from typing import Any

from suture.errors import DatabaseError
from suture.server.db.hosts import stamp
from suture.server.fleet.context import Fleet


def check(fleet: Fleet) -> tuple[bool, dict[str, Any]]:
    """(healthy, what was checked) for ``/healthz``."""
    try:
        fleet.store.ping()
        database: dict[str, Any] = {"ok": True}
    except DatabaseError as e:
        database = {"ok": False, "error": e.message}
    meta = fleet.catalog.metadata()
    now = fleet.now()
    expired = sorted(role for role, when in meta.expires.items() if when <= now)
    repository: dict[str, Any] = {
        "ok": not meta.error and not expired,
        "expires": {role: stamp(when) for role, when in sorted(meta.expires.items())},
    }
    if meta.error:
        repository["error"] = meta.error
    elif expired:
        repository["error"] = (
            f"the {', '.join(expired)} metadata has expired: run 'suture repo refresh'"
        )
    ok = bool(database["ok"] and repository["ok"])
    return ok, {"database": database, "repository": repository}
