"""Fleet queries: which hosts run what, which are exposed to a CVE, what is fixed in memory.

Plain functions of (store, catalog, ...) returning JSON-ready dicts, shared
by the API (:mod:`suture.server.routes_query`) and the dashboard.

Two rules hold everywhere:

- A host's *live level* is the level it reports when it is ``patched`` or
  ``failed`` (a failed host keeps the level it had: the agent reports the
  one it still runs and the one it tried apart), else 0.
- Levels are cumulative: level N carries every fix of the levels below it,
  so a CVE first fixed by level L of a build and channel is fixed on a host
  of that build and channel whose live level is L or more.

A kernel without a build id cannot be live patched: such a host is
``unsupported`` whatever it reported. Hosts whose last check-in is older
than ``inactive_after`` seconds are *inactive* (``active: false``, status
``inactive``); their state stays the one they last reported.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from suture import timefmt
from suture.server.catalog import Catalog, LevelInfo
from suture.server.checkin import STATES
from suture.server.store import HostRecord, Store

INACTIVE_AFTER = 3 * 3600  # s without a check-in before a host counts as inactive
MAX_INACTIVE_AFTER = 10 * 365 * 86400  # s
MAX_FAILURES = 1000  # failed hosts listed in a summary (the count is always whole)
STATUSES = (*STATES, "inactive")
CVE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")  # CVE-2026-1234, GHSA-..., ...
NO_FIX = "no fix published for this build"

# The state every query shows: a kernel without a build id is unsupported whatever was reported.
STATE_SQL = "CASE WHEN h.kernel_build_id = '' THEN 'unsupported' ELSE h.state END"

_Group = tuple[str, str, str]  # (release, build id, channel)


def stamp(when: float) -> str:
    """Unix time as the store's ISO 8601 form (which sorts as text)."""
    return timefmt.utc(when)


def effective_state(build_id: str, state: str) -> str:
    """The state a query shows (see :data:`STATE_SQL`)."""
    return "unsupported" if not build_id else state


def live_level(build_id: str, state: str, level: int) -> int:
    """The level live in memory, as far as the server knows (see the module docstring)."""
    return level if effective_state(build_id, state) in ("patched", "failed") else 0


@dataclass(frozen=True)
class HostFilter:
    """Filters of ``GET /api/v1/hosts``; empty values do not filter."""

    release: str = ""
    build_id: str = ""
    level: int | None = None
    state: str = ""  # as reported (unsupported for kernels without a build id)
    status: str = ""  # a state, or "inactive"
    tag: str = ""
    channel: str = ""
    cve: str = ""  # hosts exposed to it: a fix is published for their build, not live
    inactive_after: int = INACTIVE_AFTER  # s


def _like(text: str) -> str:
    """``text`` as a LIKE pattern matched literally (escape character ``!``)."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def _where(f: HostFilter, cutoff: str) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("h.kernel_release", f.release),
        ("h.kernel_build_id", f.build_id),
        ("h.channel", f.channel),
    ):
        if value:
            clauses.append(f"{column} = ?")
            params.append(value)
    if f.level is not None:
        clauses.append("h.level = ?")
        params.append(f.level)
    if f.state:
        clauses.append(f"{STATE_SQL} = ?")
        params.append(f.state)
    if f.status == "inactive":
        clauses.append("h.last_seen < ?")
        params.append(cutoff)
    elif f.status:
        clauses.append(f"h.last_seen >= ? AND {STATE_SQL} = ?")
        params += [cutoff, f.status]
    if f.tag:
        # Tags are a JSON list per registration; the quoted tag is one element.
        # LIKE narrows it down (SQLite's ignores case); the exact test follows in Python.
        clauses.append("r.tags LIKE ? ESCAPE '!'")
        params.append("%" + _like(json.dumps(f.tag)) + "%")
    return " AND ".join(clauses), params


def host_dict(record: HostRecord, cutoff: str) -> dict[str, Any]:
    """A host for the API: its last report, ``state`` as every query shows it, and more.

    ``active``: it checked in since ``cutoff``; ``status``: ``inactive``, or the state.
    """
    data = record.to_dict()
    state = effective_state(record.checkin.build_id, record.checkin.state)
    active = record.last_seen >= cutoff
    data.update(state=state, active=active, status=state if active else "inactive")
    return data


def hosts(store: Store, catalog: Catalog, f: HostFilter, now: float) -> list[dict[str, Any]]:
    """The hosts that pass every filter, by host id."""
    cutoff = stamp(now - f.inactive_after)
    where, params = _where(f, cutoff)
    found = store.hosts(where, params)
    if f.tag:
        found = [h for h in found if f.tag in h.tags]
    if f.cve:
        fixes = fix_levels(catalog, f.cve)
        found = [h for h in found if _exposure(fixes, _brief_of(h)) == "exposed"]
    return [host_dict(h, cutoff) for h in found]


# --- exposure to a CVE -----------------------------------------------------------------


@dataclass(frozen=True)
class _Brief:
    """The columns the exposure and export queries need of a host."""

    host_id: str
    hostname: str
    release: str
    build_id: str
    channel: str
    level: int
    state: str
    last_seen: str
    tags: tuple[str, ...]

    @property
    def group(self) -> _Group:
        return (self.release, self.build_id, self.channel)

    @property
    def live(self) -> int:
        return live_level(self.build_id, self.state, self.level)

    def to_dict(self, cutoff: str) -> dict[str, Any]:
        state = effective_state(self.build_id, self.state)
        active = self.last_seen >= cutoff
        return {
            "host_id": self.host_id,
            "hostname": self.hostname,
            "kernel": {"release": self.release, "build_id": self.build_id},
            "channel": self.channel,
            "level": self.level,
            "state": state,
            "active": active,
            "status": state if active else "inactive",
            "last_seen": self.last_seen,
        }


_BRIEF_SQL = (
    "SELECT h.host_id, h.hostname, h.kernel_release, h.kernel_build_id, h.channel, h.level,"
    " h.state, h.last_seen, r.tags FROM hosts h LEFT JOIN registrations r"
    " ON r.host_id = h.host_id ORDER BY h.host_id"
)


def _briefs(store: Store) -> list[_Brief]:
    # One query for the whole fleet: the catalog lives in memory, so the
    # classification is done here, not by a round trip per host.
    return [
        _Brief(r[0], r[1], r[2], r[3], r[4], int(r[5]), r[6], r[7], tuple(json.loads(r[8] or "[]")))
        for r in store.execute(_BRIEF_SQL)
    ]


def _brief_of(h: HostRecord) -> _Brief:
    c = h.checkin
    return _Brief(
        c.host_id, c.hostname, c.release, c.build_id, c.channel, c.level, c.state, h.last_seen, ()
    )


def fix_levels(catalog: Catalog, cve: str) -> dict[_Group, LevelInfo]:
    """The first level of each build and channel whose fixes include ``cve``."""
    first: dict[_Group, LevelInfo] = {}
    for lv in catalog.all():
        key = (lv.release, lv.build_id, lv.channel)
        if cve in lv.cves and (key not in first or lv.level < first[key].level):
            first[key] = lv
    return first


def _exposure(fixes: dict[_Group, LevelInfo], host: _Brief) -> str:
    fix = fixes.get(host.group) if host.build_id else None
    if fix is None:
        return "no_fix"
    return "fixed" if host.live >= fix.level else "exposed"


def exposure(
    store: Store, catalog: Catalog, cve: str, now: float, inactive_after: int = INACTIVE_AFTER
) -> dict[str, Any]:
    """Hosts exposed to ``cve`` now, hosts with no fix published for their build, hosts fixed.

    Exposed: a level of the host's build and channel fixes it and that level
    is not live (the host runs a lower one, or none). Each exposed or fixed
    host names the level that fixes it (``fixed_by``).
    """
    cutoff = stamp(now - inactive_after)
    fixes = fix_levels(catalog, cve)
    lists: dict[str, list[dict[str, Any]]] = {"exposed": [], "no_fix": [], "fixed": []}
    for host in _briefs(store):
        kind = _exposure(fixes, host)
        entry = host.to_dict(cutoff)
        fix = fixes.get(host.group)
        if kind == "no_fix":
            entry["reason"] = NO_FIX
        elif fix is not None:
            entry["fixed_by"] = {"level": fix.level, "name": fix.name}
        lists[kind].append(entry)
    return {
        "format": 1,
        "cve": cve,
        "inactive_after": inactive_after,
        "counts": {kind: len(found) for kind, found in lists.items()},
        "builds_with_fix": [
            {"release": r, "build_id": b, "channel": c, "level": lv.level, "name": lv.name}
            for (r, b, c), lv in sorted(fixes.items())
        ],
        **lists,
    }


# --- what is fixed in memory -----------------------------------------------------------


class FixedCves:
    """CVEs fixed in memory per (build, channel, live level), computed once per group."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._cache: dict[tuple[str, str, str, int], tuple[list[str], list[LevelInfo]]] = {}

    def of(self, release: str, build_id: str, channel: str, live: int) -> list[str]:
        """CVEs of the levels up to ``live`` (cumulative levels), sorted."""
        return self._split(release, build_id, channel, live)[0]

    def pending(self, release: str, build_id: str, channel: str, live: int) -> list[LevelInfo]:
        """The published levels above ``live`` (what would fix more)."""
        return self._split(release, build_id, channel, live)[1]

    def _split(
        self, release: str, build_id: str, channel: str, live: int
    ) -> tuple[list[str], list[LevelInfo]]:
        key = (release, build_id, channel, live)
        if key not in self._cache:
            levels = self._catalog.levels(release, build_id, channel) if build_id else []
            fixed = sorted({c for lv in levels if lv.level <= live for c in lv.cves})
            self._cache[key] = (fixed, [lv for lv in levels if lv.level > live])
        return self._cache[key]


def export(
    store: Store, catalog: Catalog, now: float, inactive_after: int = INACTIVE_AFTER
) -> list[dict[str, Any]]:
    """Every host with its kernel, level, state, tags, CVEs fixed in memory and last check-in."""
    cutoff = stamp(now - inactive_after)
    fixed = FixedCves(catalog)
    rows = []
    for host in _briefs(store):
        entry = host.to_dict(cutoff)
        entry["tags"] = list(host.tags)
        entry["cves_fixed"] = fixed.of(host.release, host.build_id, host.channel, host.live)
        rows.append(entry)
    return rows


# --- the summary -----------------------------------------------------------------------


def groups(store: Store, cutoff: str) -> list[tuple[str, str, int, str, int, int]]:
    """(release, build id, level, state, hosts, inactive hosts), aggregated by the database."""
    rows = store.execute(
        f"SELECT h.kernel_release, h.kernel_build_id, h.level, {STATE_SQL}, COUNT(*),"  # noqa: S608 - constant SQL
        " SUM(CASE WHEN h.last_seen < ? THEN 1 ELSE 0 END)"
        " FROM hosts h GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
        (cutoff,),
    )
    return [(r[0], r[1], int(r[2]), r[3], int(r[4]), int(r[5] or 0)) for r in rows]


def _failures(store: Store, limit: int) -> list[dict[str, Any]]:
    rows = store.execute(
        "SELECT h.host_id, h.hostname, h.kernel_release, h.kernel_build_id, h.channel, h.level,"
        " h.attempted_level, h.last_error, h.last_seen FROM hosts h"
        " WHERE h.state = 'failed' AND h.kernel_build_id <> ''"
        " ORDER BY h.last_seen DESC, h.host_id LIMIT ?",
        (limit,),
    )
    return [
        {
            "host_id": r[0],
            "hostname": r[1],
            "kernel": {"release": r[2], "build_id": r[3]},
            "channel": r[4],
            "level": int(r[5]),
            "attempted_level": int(r[6]),
            "last_error": r[7],
            "last_seen": r[8],
        }
        for r in rows
    ]


def summary(store: Store, now: float, inactive_after: int = INACTIVE_AFTER) -> dict[str, Any]:
    """Hosts per (kernel build, level, state), the failed hosts, and the fleet's totals."""
    found = groups(store, stamp(now - inactive_after))
    by_state: Counter[str] = Counter()
    inactive = 0
    for _, _, _, state, count, gone in found:
        by_state[state] += count
        inactive += gone
    total = sum(by_state.values())
    return {
        "format": 1,
        "inactive_after": inactive_after,
        "totals": {
            "hosts": total,
            "active": total - inactive,
            "inactive": inactive,
            "unsupported": by_state["unsupported"],
            "failed": by_state["failed"],
            "by_state": {s: by_state[s] for s in STATES},
        },
        "groups": [
            {
                "kernel": {"release": r, "build_id": b},
                "level": level,
                "state": state,
                "hosts": count,
                "inactive": gone,
            }
            for r, b, level, state, count, gone in found
        ],
        "failures": _failures(store, MAX_FAILURES),
    }
