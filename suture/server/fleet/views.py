"""What operators read of the fleet: hosts page by page, exposure to a CVE, summary, export.

Plain functions of the store and the catalog that return JSON-ready dicts,
shared by the API and the dashboard so that both count the same way. The
queries themselves are in :mod:`suture.server.db.queries`.

- A host's *live level* is the level it reports when it is ``patched`` or
  ``failed`` (a failed host keeps the level it had), else 0.
- Levels are cumulative: level N carries every fix of the levels below it,
  so a CVE first fixed by level L of a build and channel is fixed on a host
  of that build and channel whose live level is L or more.
- A kernel without a build id cannot be live patched: such a host is
  ``unsupported`` whatever it reported. Hosts whose last check-in is older
  than ``inactive_after`` seconds are *inactive* (``active: false``, status
  ``inactive``); their state stays the one they last reported.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from suture.contract.checkin import STATES
from suture.server.db import queries
from suture.server.db.hosts import HostRecord, stamp
from suture.server.db.pool import Store
from suture.server.db.queries import Brief, Group, HostFilter
from suture.server.fleet import paging
from suture.server.fleet.catalog import Catalog, LevelInfo

INACTIVE_AFTER = 3 * 3600  # s without a check-in before a host counts as inactive
MAX_INACTIVE_AFTER = 10 * 365 * 86400  # s
MAX_FAILURES = 1000  # failed hosts listed in a summary (the count is always whole)
STATUSES = (*STATES, "inactive")
CVE_ID = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"  # CVE-2026-1234, GHSA-..., ...
NO_FIX = "no fix published for this build"
KINDS = ("exposed", "no_fix", "fixed")


def is_cve(text: str) -> bool:
    """True for a vulnerability id (CVE-2026-1234, GHSA-...)."""
    return re.fullmatch(CVE_ID, text) is not None


def effective_state(build_id: str, state: str) -> str:
    """The state every query shows: unsupported for a kernel without a build id."""
    return "unsupported" if not build_id else state


def live_level(build_id: str, state: str, level: int) -> int:
    """The level live in memory, as far as the server knows (see the module docstring)."""
    return level if effective_state(build_id, state) in ("patched", "failed") else 0


def cutoff(now: float, inactive_after: int) -> str:
    """Last-seen stamps before this are inactive."""
    return stamp(now - inactive_after)


def host_dict(record: HostRecord, since: str) -> dict[str, Any]:
    """A host for the API: its last report, ``state`` as every query shows it, and more.

    ``active``: it checked in since ``since``; ``status``: ``inactive``, or the state.
    """
    data = record.to_dict()
    state = effective_state(record.checkin.build_id, record.checkin.state)
    active = record.last_seen >= since
    data.update(state=state, active=active, status=state if active else "inactive")
    return data


def brief_dict(host: Brief, since: str) -> dict[str, Any]:
    """A host in a list of exposure or export."""
    state = effective_state(host.build_id, host.state)
    active = host.last_seen >= since
    return {
        "host_id": host.host_id,
        "hostname": host.hostname,
        "kernel": {"release": host.release, "build_id": host.build_id},
        "channel": host.channel,
        "level": host.level,
        "state": state,
        "active": active,
        "status": state if active else "inactive",
        "last_seen": host.last_seen,
    }


@dataclass(frozen=True)
class HostQuery:
    """A host list's filters as asked (``cve``: hosts exposed to it)."""

    release: str = ""
    build_id: str = ""
    level: int | None = None
    state: str = ""
    status: str = ""
    tag: str = ""
    channel: str = ""
    cve: str = ""
    inactive_after: int = INACTIVE_AFTER
    contains: str = ""  # in the host id or name, any case (the dashboard's search)


def _filter(catalog: Catalog, q: HostQuery, since: str) -> HostFilter:
    return HostFilter(
        release=q.release,
        build_id=q.build_id,
        level=q.level,
        state=q.state,
        status=q.status,
        tag=q.tag,
        channel=q.channel,
        exposed_to=fix_groups(catalog, q.cve) if q.cve else None,
        cutoff=since,
        contains=q.contains,
    )


def count_hosts(store: Store, catalog: Catalog, q: HostQuery, now: float) -> int:
    """How many hosts pass every filter."""
    return queries.count_hosts(store, _filter(catalog, q, cutoff(now, q.inactive_after)))


def hosts_page(
    store: Store, catalog: Catalog, q: HostQuery, now: float, *, cursor: str = "", limit: int
) -> dict[str, Any]:
    """One page of the hosts that pass every filter, by host id, and the next page's cursor."""
    since = cutoff(now, q.inactive_after)
    f = _filter(catalog, q, since)
    after = str(paging.decode("hosts", cursor)) if cursor else ""
    page = queries.hosts_page(store, f, after, limit + 1)
    more = len(page) > limit
    page = page[:limit]
    return {
        "format": 1,
        "hosts": [host_dict(h, since) for h in page],
        "next_cursor": paging.encode("hosts", page[-1].checkin.host_id) if more else None,
    }


# --- exposure to a CVE -----------------------------------------------------------------


def fix_levels(catalog: Catalog, cve: str) -> dict[Group, LevelInfo]:
    """The first level of each build and channel whose fixes include ``cve``."""
    first: dict[Group, LevelInfo] = {}
    for lv in catalog.all():
        key = (lv.release, lv.build_id, lv.channel)
        if cve in lv.cves and (key not in first or lv.level < first[key].level):
            first[key] = lv
    return first


def fix_groups(catalog: Catalog, cve: str) -> dict[Group, int]:
    """The first level that fixes ``cve``, by build and channel."""
    return {k: lv.level for k, lv in fix_levels(catalog, cve).items()}


def exposure(
    store: Store,
    catalog: Catalog,
    cve: str,
    now: float,
    *,
    inactive_after: int = INACTIVE_AFTER,
    kind: str = "",
    cursor: str = "",
    limit: int,
) -> dict[str, Any]:
    """Hosts exposed to ``cve`` now, hosts with no fix published for their build, hosts fixed.

    Exposed: a level of the host's build and channel fixes it and that level
    is not live (the host runs a lower one, or none). Each exposed or fixed
    host names the level that fixes it (``fixed_by``). The three lists are
    paged: without ``kind``, the first page of each; with ``kind`` (and its
    ``cursor``), the next page of that one list only.
    """
    since = cutoff(now, inactive_after)
    fixes = fix_levels(catalog, cve)
    levels = {k: lv.level for k, lv in fixes.items()}
    lists: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    cursors: dict[str, str | None] = dict.fromkeys(KINDS)
    counts = {}
    for k in KINDS:
        where, params = queries.exposure_sql(levels, k)
        counts[k] = queries.count(store, where, params)
        if kind and k != kind:
            continue
        after = str(paging.decode(f"exposed-{k}", cursor)) if cursor and k == kind else ""
        page = queries.briefs_page(store, after, limit + 1, where, params)
        for host in page[:limit]:
            entry = brief_dict(host, since)
            fix = fixes.get(host.group)
            if k == "no_fix":
                entry["reason"] = NO_FIX
            elif fix is not None:
                entry["fixed_by"] = {"level": fix.level, "name": fix.name}
            lists[k].append(entry)
        if len(page) > limit:
            cursors[k] = paging.encode(f"exposed-{k}", page[limit - 1].host_id)
    return {
        "format": 1,
        "cve": cve,
        "inactive_after": inactive_after,
        "counts": counts,
        "builds_with_fix": [
            {"release": r, "build_id": b, "channel": c, "level": lv.level, "name": lv.name}
            for (r, b, c), lv in sorted(fixes.items())
        ],
        **lists,
        "next_cursors": cursors,
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


def export_page(
    store: Store,
    catalog: Catalog,
    now: float,
    *,
    inactive_after: int = INACTIVE_AFTER,
    cursor: str = "",
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of hosts with kernel, level, state, tags, CVEs fixed in memory and last check-in."""
    since = cutoff(now, inactive_after)
    fixed = FixedCves(catalog)
    after = str(paging.decode("export", cursor)) if cursor else ""
    page = queries.briefs_page(store, after, limit + 1)
    rows = []
    for host in page[:limit]:
        entry = brief_dict(host, since)
        entry["tags"] = list(host.tags)
        live = live_level(host.build_id, host.state, host.level)
        entry["cves_fixed"] = fixed.of(host.release, host.build_id, host.channel, live)
        rows.append(entry)
    more = len(page) > limit
    return rows, paging.encode("export", page[limit - 1].host_id) if more else None


# --- the summary -----------------------------------------------------------------------


def summary(store: Store, now: float, inactive_after: int = INACTIVE_AFTER) -> dict[str, Any]:
    """Hosts per (kernel build, level, state), the failed hosts, and the fleet's totals."""
    found = queries.groups(store, cutoff(now, inactive_after))
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
        "failures": queries.failures(store, MAX_FAILURES),
    }


def by_cve(
    catalog: Catalog, groups: Mapping[tuple[Group, int], Mapping[str, int]]
) -> dict[str, Counter[str]]:
    """CVE -> hosts fixed / exposed / no_fix, from host counts by (build, level) and state."""
    fixes: dict[str, dict[Group, int]] = {}
    for key, levels in catalog.by_build().items():
        for lv in levels:  # ascending: the first level naming a CVE fixes it
            for cve in lv.cves:
                fixes.setdefault(cve, {}).setdefault(key, lv.level)
    found: dict[str, Counter[str]] = {cve: Counter() for cve in fixes}
    for (key, level), states in groups.items():
        for state, n in states.items():
            live = live_level(key[1], state, level)
            for cve, by_build in fixes.items():
                fix = by_build.get(key) if key[1] else None
                kind = "no_fix" if fix is None else "fixed" if live >= fix else "exposed"
                found[cve][kind] += n
    return found
