"""What operators read of the fleet: hosts page by page, exposure to a CVE, summary, export.

Plain functions of the store and the catalog that return JSON-ready dicts,
shared by the API and the dashboard so that both count the same way. The
queries themselves are in :mod:`suture.server.db.queries`.

- A host's *live level* is the level it reports when it is ``patched`` or
  ``failed`` (a failed host keeps the level it had), else 0.
- Levels are cumulative: level N carries every fix of the levels below it,
  so a CVE first fixed by level L of a build and channel is fixed on a host
  of that build and channel whose live level is L or more.
- A userspace level (check-in format 3) fixes its CVEs in memory only where
  its library build's row is ``patched`` (every process runs it). Where some
  processes still run the old code the row is ``partial``, and so are its
  CVEs on that host: not fixed, in every view (lists, exposure, export,
  VEX). For one CVE, a host is exposed, partial, fixed or has no fix, the
  first that holds (:mod:`suture.server.db.queries`).
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

from suture.contract.checkin import CVE, STATES, Library
from suture.server.db import queries
from suture.server.db.hosts import HostRecord, stamp
from suture.server.db.pool import Store
from suture.server.db.queries import Brief, CveFixes, Group, HostFilter
from suture.server.fleet import paging
from suture.server.fleet.catalog import Catalog, LevelInfo

INACTIVE_AFTER = 3 * 3600  # s without a check-in before a host counts as inactive
MAX_INACTIVE_AFTER = 10 * 365 * 86400  # s
MAX_FAILURES = 1000  # failed hosts listed in a summary (the count is always whole)
STATUSES = (*STATES, "inactive")
CVE_ID = CVE  # CVE-2026-1234, GHSA-..., ... (the check-in's userspace rows name them too)
NO_FIX = "no fix published for this build"
KINDS = ("exposed", "partial", "no_fix", "fixed")


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


def _filter(store: Store, catalog: Catalog, q: HostQuery, since: str) -> HostFilter:
    return HostFilter(
        release=q.release,
        build_id=q.build_id,
        level=q.level,
        state=q.state,
        status=q.status,
        tag=q.tag,
        channel=q.channel,
        exposed_to=cve_fixes(store, catalog, q.cve) if q.cve else None,
        cutoff=since,
        contains=q.contains,
    )


def count_hosts(store: Store, catalog: Catalog, q: HostQuery, now: float) -> int:
    """How many hosts pass every filter."""
    return queries.count_hosts(store, _filter(store, catalog, q, cutoff(now, q.inactive_after)))


def hosts_page(
    store: Store, catalog: Catalog, q: HostQuery, now: float, *, cursor: str = "", limit: int
) -> dict[str, Any]:
    """One page of the hosts that pass every filter, by host id, and the next page's cursor."""
    since = cutoff(now, q.inactive_after)
    f = _filter(store, catalog, q, since)
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


def cve_fixes(store: Store, catalog: Catalog, cve: str, *, in_rows: bool | None = None) -> CveFixes:
    """Where ``cve`` has a fix: kernel builds and library builds, and whether a row names it.

    ``in_rows``: whether a host's userspace row names it, when the caller knows.
    """
    first = fix_levels(catalog, cve)
    return CveFixes(
        cve=cve,
        kernels={k: lv.level for k, lv in first.items() if lv.kind != "userspace"},
        libraries={k: lv.level for k, lv in first.items() if lv.kind == "userspace"},
        in_rows=queries.names_cve(store, cve) if in_rows is None else in_rows,
    )


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
    """Hosts exposed to ``cve`` now, partly fixed, with no fix published, fixed.

    Exposed: a level of the host's kernel build and channel fixes it and that
    level is not live (the host runs a lower one, or none), or a library
    build of the host has a level that fixes it but runs it in none of its
    processes, or runs a lower one. Partial: a library build of the host runs
    the fix in some of its processes only. Each exposed or fixed host names
    the kernel level that fixes it (``fixed_by``) and, where userspace levels
    decide, its library builds that have or lack the fix (``libraries``:
    their check-in rows, each with the first level of that build that fixes
    it as ``fixed_by``). The four lists are paged: without ``kind``, the
    first page of each; with ``kind`` (and its ``cursor``), the next page of
    that one list only.
    """
    since = cutoff(now, inactive_after)
    fixes = fix_levels(catalog, cve)
    where_fixed = cve_fixes(store, catalog, cve)
    lists: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    cursors: dict[str, str | None] = dict.fromkeys(KINDS)
    counts = {}
    for k in KINDS:
        where, params = queries.exposure_sql(where_fixed, k, store.dialect)
        counts[k] = queries.count(store, where, params)
        if kind and k != kind:
            continue
        after = str(paging.decode(f"exposed-{k}", cursor)) if cursor and k == kind else ""
        page = queries.briefs_page(store, after, limit + 1, where, params)
        rows = queries.libraries(store, [h.host_id for h in page[:limit]])
        for host in page[:limit]:
            entry = brief_dict(host, since)
            fix = fixes.get(host.group)
            if k == "no_fix":
                entry["reason"] = NO_FIX
            elif fix is not None:
                entry["fixed_by"] = {"level": fix.level, "name": fix.name}
            if where_fixed.userspace and (found := _rows_for(where_fixed, host, rows)):
                entry["libraries"] = found
            lists[k].append(entry)
        if len(page) > limit:
            cursors[k] = paging.encode(f"exposed-{k}", page[limit - 1].host_id)
    return {
        "format": 1,
        "cve": cve,
        "inactive_after": inactive_after,
        "counts": counts,
        "builds_with_fix": [
            {
                "release": r,
                "build_id": b,
                "channel": c,
                "level": lv.level,
                "name": lv.name,
                "kind": lv.kind,
            }
            for (r, b, c), lv in sorted(fixes.items())
        ],
        **lists,
        "next_cursors": cursors,
    }


def _rows_for(
    fixes: CveFixes, host: Brief, rows: Mapping[str, tuple[Library, ...]]
) -> list[dict[str, Any]]:
    """The host's userspace rows that have or lack the fix of ``fixes.cve``, for its entry."""
    found = []
    for row in rows.get(host.host_id, ()):
        first = fixes.libraries.get((row.soname, row.build_id, host.channel))
        if fixes.cve in row.cves or first is not None:
            found.append({**row.to_document(), "fixed_by": first})
    return found


# --- what is fixed in memory -----------------------------------------------------------


@dataclass(frozen=True)
class InMemory:
    """A host's CVEs as far as its live levels go (the kinds of the module docstring).

    ``fixed``: by its live kernel level or a library build's level in every
    process; ``partial``: in some processes of a library build only;
    ``exposed``: a published level of its kernel or library builds would fix
    it and is not live (or is recorded but live in no process).
    """

    fixed: list[str]
    partial: list[str]
    exposed: list[str]


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

    def of_library(self, row: Library, channel: str) -> list[str]:
        """CVEs a userspace row's level fixes where it runs: its own and its build's levels'."""
        published = self.of(row.soname, row.build_id, channel, row.level)
        return sorted({*row.cves, *published})

    def in_memory(
        self, release: str, build_id: str, channel: str, live: int, rows: tuple[Library, ...]
    ) -> InMemory:
        """A host's fixed, partly fixed and exposed CVEs from its live kernel level and rows."""
        kernel = set(self.of(release, build_id, channel, live))
        exposed = {c for lv in self.pending(release, build_id, channel, live) for c in lv.cves}
        exposed -= kernel
        fixed, partial = set(kernel), set[str]()
        for row in rows:
            mine = set(self.of_library(row, channel))
            later = {c for lv in self.pending(row.soname, row.build_id, channel, row.level)
                     for c in lv.cves}  # fmt: skip
            exposed |= later - mine
            {"patched": fixed, "partial": partial}.get(row.state, exposed).update(mine)
        partial -= exposed
        return InMemory(
            fixed=sorted(fixed - exposed - partial),
            partial=sorted(partial),
            exposed=sorted(exposed),
        )

    def of_host(self, record: HostRecord) -> InMemory:
        """:meth:`in_memory` of a host as stored."""
        c = record.checkin
        live = live_level(c.build_id, c.state, c.level)
        return self.in_memory(c.release, c.build_id, c.channel, live, c.userspace)

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
    """A page of hosts with kernel, level, state, tags, CVEs fixed in memory and last check-in.

    ``cves_partial``: the CVEs fixed in some processes only (never in ``cves_fixed``).
    """
    since = cutoff(now, inactive_after)
    fixed = FixedCves(catalog)
    after = str(paging.decode("export", cursor)) if cursor else ""
    page = queries.briefs_page(store, after, limit + 1)
    libraries = queries.libraries(store, [h.host_id for h in page[:limit]])
    rows = []
    for host in page[:limit]:
        entry = brief_dict(host, since)
        entry["tags"] = list(host.tags)
        live = live_level(host.build_id, host.state, host.level)
        memory = fixed.in_memory(
            host.release, host.build_id, host.channel, live, libraries.get(host.host_id, ())
        )
        entry["cves_fixed"] = memory.fixed
        entry["cves_partial"] = memory.partial
        rows.append(entry)
    more = len(page) > limit
    return rows, paging.encode("export", page[limit - 1].host_id) if more else None


# --- the summary -----------------------------------------------------------------------


def summary(store: Store, now: float, inactive_after: int = INACTIVE_AFTER) -> dict[str, Any]:
    """Hosts per (kernel build, level, state), the failed hosts, and the fleet's totals.

    ``libraries``: hosts per (library build, channel, userspace level, row
    state), with the processes of those rows summed.
    """
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
        "libraries": queries.library_groups(store, cutoff(now, inactive_after)),
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


def cve_table(
    store: Store, catalog: Catalog, groups: Mapping[tuple[Group, int], Mapping[str, int]]
) -> dict[str, Counter[str]]:
    """CVE -> hosts of each kind (:data:`KINDS`).

    :func:`by_cve` from the kernel groups; for CVEs of userspace levels
    (published, or named by a host's row), the database's count of each kind.
    """
    found = by_cve(catalog, groups)
    named = queries.library_cves(store)
    userspace = named | {c for lv in catalog.all() if lv.kind == "userspace" for c in lv.cves}
    for cve in sorted(userspace):
        fixes = cve_fixes(store, catalog, cve, in_rows=cve in named)
        found[cve] = Counter(
            {k: queries.count(store, *queries.exposure_sql(fixes, k, store.dialect)) for k in KINDS}
        )
    return found
