"""The fleet's read queries: host lists page by page, exposure to a CVE, aggregates.

Lists are paged by key (``host_id > ?`` in host id order), never by offset:
a page costs the same at any depth, and hosts that come and go between two
pages neither repeat nor vanish. Aggregates (counts per build, level and
state) are computed by the database.

Two rules hold in every query:

- A kernel without a build id cannot be live patched: such a host shows
  ``unsupported`` whatever it reported (:data:`STATE_SQL`).
- A host's live level is its reported level when it is ``patched`` or
  ``failed`` (a failed host keeps the level it had), else 0 (:data:`LIVE_SQL`).

A CVE may also be fixed by a userspace level, in the processes of one
library build (``host_libraries``, check-in format 3). For one CVE a host is,
the first that holds (:func:`exposure_sql`):

- ``exposed``: a kernel level of its build fixes it and is not live, or a
  library build of it has the fix recorded but in none of its processes
  (``unpatched``), or has a level published that would fix it and runs a
  lower one;
- ``partial``: a library build of it has the fix in some processes only;
- ``fixed``: its live kernel level or a library build's level in every
  process fixes it;
- ``no_fix``: nothing fixes it on that host.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from suture.contract.checkin import Library
from suture.server.db.hosts import (
    HOST_COLUMNS,
    HOSTS_JOINED,
    HostRecord,
    host_record,
    libraries_of,
    with_libraries,
)
from suture.server.db.pool import Store, Tx

STATE_SQL = "CASE WHEN h.kernel_build_id = '' THEN 'unsupported' ELSE h.state END"
LIVE_SQL = (
    "CASE WHEN h.kernel_build_id <> '' AND h.state IN ('patched', 'failed') THEN h.level ELSE 0 END"
)

Group = tuple[str, str, str]  # (release, build id, channel); a library's: (soname, ...)
Sql = tuple[str, list[Any]]  # a condition and its parameters
NONE: Sql = ("1 = 0", [])


@dataclass(frozen=True)
class CveFixes:
    """Where one CVE has a fix: per build and channel, the first level that names it."""

    cve: str = ""
    kernels: Mapping[Group, int] = field(default_factory=dict)
    libraries: Mapping[Group, int] = field(default_factory=dict)  # (soname, build id, channel)
    in_rows: bool = False  # some host's userspace row names it

    @property
    def userspace(self) -> bool:
        """Whether userspace rows can decide anything for this CVE (else they are not read)."""
        return bool(self.libraries) or self.in_rows


@dataclass(frozen=True)
class HostFilter:
    """Filters of a host list; empty values do not filter."""

    release: str = ""
    build_id: str = ""
    level: int | None = None
    state: str = ""  # as shown (unsupported for kernels without a build id)
    status: str = ""  # a state of an active host, or "inactive"
    tag: str = ""
    channel: str = ""
    exposed_to: CveFixes | None = None  # hosts exposed to this CVE
    cutoff: str = ""  # last_seen before this (ISO text) is inactive
    contains: str = ""  # in the host id or the hostname, any case


def _like(text: str) -> str:
    """``text`` as a LIKE pattern matched literally (escape character ``!``)."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def contains(dialect: str, column: str) -> str:
    """A test that text ``column`` holds the parameter, case-sensitive (unlike SQLite's LIKE)."""
    return f"instr({column}, ?) > 0" if dialect == "sqlite" else f"strpos({column}, ?) > 0"


def _kernel_sql(fixes: Mapping[Group, int], op: str) -> Sql:
    """Hosts on a build and channel with a fix whose live level is ``op`` its first fix level."""
    if not fixes:
        return NONE
    parts: list[str] = []
    params: list[Any] = []
    for (release, build_id, channel), level in sorted(fixes.items()):
        parts.append(
            "(h.kernel_release = ? AND h.kernel_build_id = ? AND h.channel = ?"
            f" AND {LIVE_SQL} {op} ?)"
        )
        params += [release, build_id, channel, level]
    return f"({' OR '.join(parts)})", params


def _library_sql(fixes: Mapping[Group, int], op: str) -> Sql:
    """Rows ``u`` of a library build and channel with a fix whose level is ``op`` that fix's."""
    if not fixes:
        return NONE
    parts: list[str] = []
    params: list[Any] = []
    for (soname, build_id, channel), level in sorted(fixes.items()):
        parts.append(f"(u.soname = ? AND u.build_id = ? AND h.channel = ? AND u.level {op} ?)")
        params += [soname, build_id, channel, level]
    return f"({' OR '.join(parts)})", params


def _no_kernel_fix(fixes: Mapping[Group, int]) -> Sql:
    """Hosts on no build and channel of ``fixes``."""
    if not fixes:
        return "1 = 1", []
    parts: list[str] = []
    params: list[Any] = []
    for (release, build_id, channel), _ in sorted(fixes.items()):
        parts.append("(h.kernel_release = ? AND h.kernel_build_id = ? AND h.channel = ?)")
        params += [release, build_id, channel]
    return f"(h.kernel_build_id = '' OR NOT ({' OR '.join(parts)}))", params


def _rows(where: Sql) -> Sql:
    """Hosts with a userspace row that passes ``where``."""
    sql = f"EXISTS (SELECT 1 FROM host_libraries u WHERE u.host_id = h.host_id AND {where[0]})"  # noqa: S608 - our SQL; values in params
    return sql, where[1]


def _any(*parts: Sql) -> Sql:
    return "(" + " OR ".join(p[0] for p in parts) + ")", [v for p in parts for v in p[1]]


def _all(*parts: Sql) -> Sql:
    return "(" + " AND ".join(p[0] for p in parts) + ")", [v for p in parts for v in p[1]]


def _not(part: Sql) -> Sql:
    return f"NOT {part[0]}", part[1]


def exposure_sql(fixes: CveFixes, kind: str, dialect: str) -> Sql:
    """A condition on ``h.`` for the hosts of one kind (see the module docstring).

    Kinds: ``exposed``, ``partial``, ``fixed``, ``no_fix``. Without userspace
    rows to read, a condition on the hosts table alone.
    """
    k_exposed, k_fixed = _kernel_sql(fixes.kernels, "<"), _kernel_sql(fixes.kernels, ">=")
    if not fixes.userspace:
        found = {"exposed": k_exposed, "fixed": k_fixed, "partial": NONE}
        return found[kind] if kind in found else _no_kernel_fix(fixes.kernels)
    named = (contains(dialect, "u.cves"), [json.dumps(fixes.cve)])
    has = _any(named, _library_sql(fixes.libraries, ">="))  # the row's level fixes it
    # A published level would fix it, not the row's (nor does the row name it).
    pending = _all(_library_sql(fixes.libraries, "<"), _not(named))
    u_exposed = _rows(_any(_all(has, ("u.state = 'unpatched'", [])), pending))
    u_partial = _rows(_all(has, ("u.state = 'partial'", [])))
    u_fixed = _rows(_all(has, ("u.state = 'patched'", [])))
    exposed = _any(k_exposed, u_exposed)
    if kind == "exposed":
        return exposed
    if kind == "partial":
        return _all(_not(exposed), u_partial)
    if kind == "fixed":
        return _all(_not(exposed), _not(u_partial), _any(k_fixed, u_fixed))
    return _not(_any(exposed, u_partial, k_fixed, u_fixed))


def _where(tx: Tx, f: HostFilter) -> tuple[list[str], list[Any]]:
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
        params.append(f.cutoff)
    elif f.status:
        clauses.append(f"h.last_seen >= ? AND {STATE_SQL} = ?")
        params += [f.cutoff, f.status]
    if f.tag:
        # Tags are a JSON list per enrolment; the quoted tag is one element (tags hold no
        # quotes: models.TAG). A case-sensitive substring test: SQLite's LIKE ignores case.
        clauses.append(contains(tx.dialect, "r.tags"))
        params.append(json.dumps(f.tag))
    if f.exposed_to is not None:
        sql, more = exposure_sql(f.exposed_to, "exposed", tx.dialect)
        clauses.append(sql)
        params += more
    if f.contains:
        pattern = "%" + _like(f.contains.lower()) + "%"
        clauses.append(
            "(lower(h.host_id) LIKE ? ESCAPE '!' OR lower(h.hostname) LIKE ? ESCAPE '!')"
        )
        params += [pattern, pattern]
    return clauses, params


def count_hosts(store: Store, f: HostFilter) -> int:
    """How many hosts pass ``f``."""
    with store.read() as tx:
        clauses, params = _where(tx, f)
        row = tx.one(
            f"SELECT COUNT(*) FROM {HOSTS_JOINED} WHERE {' AND '.join(clauses) or '1 = 1'}",  # noqa: S608 - our SQL; values in params
            params,
        )
    return int(row[0]) if row else 0


def hosts_page(store: Store, f: HostFilter, after: str, limit: int) -> list[HostRecord]:
    """Up to ``limit`` hosts that pass ``f``, in host id order, after host id ``after``."""
    with store.read() as tx:
        clauses, params = _where(tx, f)
        clauses.append("h.host_id > ?")
        rows = tx.rows(
            f"SELECT {HOST_COLUMNS} FROM {HOSTS_JOINED} WHERE {' AND '.join(clauses)}"  # noqa: S608 - our SQL; values in params
            " ORDER BY h.host_id LIMIT ?",
            (*params, after, limit),
        )
        return with_libraries(tx, [host_record(r) for r in rows])


@dataclass(frozen=True)
class Brief:
    """The columns exposure and export need of a host."""

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
    def group(self) -> Group:
        """Its build and channel."""
        return (self.release, self.build_id, self.channel)


_BRIEF = (
    "h.host_id, h.hostname, h.kernel_release, h.kernel_build_id, h.channel, h.level, h.state,"
    " h.last_seen, r.tags"
)


def briefs_page(
    store: Store, after: str, limit: int, where: str = "1 = 1", params: Sequence[Any] = ()
) -> list[Brief]:
    """Up to ``limit`` hosts after host id ``after`` that pass ``where`` (SQL on ``h.``)."""
    with store.read() as tx:
        rows = tx.rows(
            f"SELECT {_BRIEF} FROM {HOSTS_JOINED} WHERE {where} AND h.host_id > ?"  # noqa: S608 - our SQL; values in params
            " ORDER BY h.host_id LIMIT ?",
            (*params, after, limit),
        )
    return [
        Brief(r[0], r[1], r[2], r[3], r[4], int(r[5]), r[6], r[7], tuple(json.loads(r[8] or "[]")))
        for r in rows
    ]


def libraries(store: Store, host_ids: Sequence[str]) -> dict[str, tuple[Library, ...]]:
    """The userspace rows of these hosts, by host id (hosts without any are left out)."""
    if not host_ids:
        return {}
    with store.read() as tx:
        return libraries_of(tx, host_ids)


def count(store: Store, where: str = "1 = 1", params: Sequence[Any] = ()) -> int:
    """How many hosts pass ``where`` (SQL on ``h.``)."""
    with store.read() as tx:
        row = tx.one(f"SELECT COUNT(*) FROM hosts h WHERE {where}", params)  # noqa: S608 - our SQL
    return int(row[0]) if row else 0


def groups(store: Store, cutoff: str) -> list[tuple[str, str, int, str, int, int]]:
    """(release, build id, level, shown state, hosts, inactive hosts), by the database."""
    with store.read() as tx:
        rows = tx.rows(
            f"SELECT h.kernel_release, h.kernel_build_id, h.level, {STATE_SQL}, COUNT(*),"  # noqa: S608 - constant SQL
            " SUM(CASE WHEN h.last_seen < ? THEN 1 ELSE 0 END)"
            " FROM hosts h GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
            (cutoff,),
        )
    return [(r[0], r[1], int(r[2]), r[3], int(r[4]), int(r[5] or 0)) for r in rows]


def library_groups(store: Store, cutoff: str) -> list[dict[str, Any]]:
    """Hosts per library build, channel, level and state, with their processes, by the database."""
    with store.read() as tx:
        rows = tx.rows(
            "SELECT u.soname, u.build_id, h.channel, u.level, u.state, COUNT(*),"
            " SUM(CASE WHEN h.last_seen < ? THEN 1 ELSE 0 END), SUM(u.patched), SUM(u.unpatched),"
            " SUM(u.failed), SUM(u.refused_total)"
            " FROM host_libraries u JOIN hosts h ON h.host_id = u.host_id"
            " GROUP BY u.soname, u.build_id, h.channel, u.level, u.state"
            " ORDER BY u.soname, u.build_id, h.channel, u.level, u.state",
            (cutoff,),
        )
    return [
        {
            "library": {"soname": r[0], "build_id": r[1]},
            "channel": r[2],
            "level": int(r[3]),
            "state": r[4],
            "hosts": int(r[5]),
            "inactive": int(r[6] or 0),
            "processes": {
                "patched": int(r[7] or 0),
                "unpatched": int(r[8] or 0),
                "failed": int(r[9] or 0),
                "refused": int(r[10] or 0),
            },
        }
        for r in rows
    ]


def library_cves(store: Store) -> set[str]:
    """Every CVE a host's userspace row names."""
    with store.read() as tx:
        rows = tx.rows("SELECT DISTINCT cves FROM host_libraries")
    return {cve for r in rows for cve in json.loads(r[0])}


def names_cve(store: Store, cve: str) -> bool:
    """Whether some host's userspace row names ``cve``."""
    with store.read() as tx:
        where = contains(tx.dialect, "cves")
        row = tx.one(f"SELECT 1 FROM host_libraries WHERE {where} LIMIT 1", (json.dumps(cve),))  # noqa: S608 - constant SQL
    return row is not None


def channel_groups(store: Store) -> list[tuple[str, str, str, int, str, int]]:
    """(release, build id, channel, level, reported state, hosts)."""
    with store.read() as tx:
        rows = tx.rows(
            "SELECT kernel_release, kernel_build_id, channel, level, state, COUNT(*) FROM hosts"
            " GROUP BY kernel_release, kernel_build_id, channel, level, state"
        )
    return [(r[0], r[1], r[2], int(r[3]), r[4], int(r[5])) for r in rows]


def failures(store: Store, limit: int) -> list[dict[str, Any]]:
    """The failed hosts (a build id: others are unsupported), newest report first."""
    with store.read() as tx:
        rows = tx.rows(
            "SELECT h.host_id, h.hostname, h.kernel_release, h.kernel_build_id, h.channel,"
            " h.level, h.attempted_level, h.last_error, h.last_seen FROM hosts h"
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


def above(store: Store, channel: str, level: int) -> int:
    """Hosts on ``channel`` that report a level above ``level``."""
    return count(store, "h.channel = ? AND h.level > ?", (channel, level))
