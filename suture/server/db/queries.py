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
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from suture.server.db.hosts import HOST_COLUMNS, HOSTS_JOINED, HostRecord, host_record
from suture.server.db.pool import Store, Tx

STATE_SQL = "CASE WHEN h.kernel_build_id = '' THEN 'unsupported' ELSE h.state END"
LIVE_SQL = (
    "CASE WHEN h.kernel_build_id <> '' AND h.state IN ('patched', 'failed') THEN h.level ELSE 0 END"
)

Group = tuple[str, str, str]  # (release, build id, channel)


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
    exposed_to: Mapping[Group, int] | None = None  # hosts below these fix levels
    cutoff: str = ""  # last_seen before this (ISO text) is inactive
    contains: str = ""  # in the host id or the hostname, any case


def _like(text: str) -> str:
    """``text`` as a LIKE pattern matched literally (escape character ``!``)."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def exposure_sql(fixes: Mapping[Group, int], kind: str) -> tuple[str, list[Any]]:
    """A condition on ``h.`` for the hosts of one kind: ``exposed``, ``fixed`` or ``no_fix``.

    ``fixes`` gives, per build and channel, the first level that fixes the CVE.
    """
    if not fixes:
        return ("1 = 0", []) if kind != "no_fix" else ("1 = 1", [])
    parts: list[str] = []
    params: list[Any] = []
    for (release, build_id, channel), level in sorted(fixes.items()):
        match = "h.kernel_release = ? AND h.kernel_build_id = ? AND h.channel = ?"
        if kind == "no_fix":
            parts.append(f"({match})")
            params += [release, build_id, channel]
        else:
            parts.append(f"({match} AND {LIVE_SQL} {'<' if kind == 'exposed' else '>='} ?)")
            params += [release, build_id, channel, level]
    either = " OR ".join(parts)
    if kind == "no_fix":
        return f"(h.kernel_build_id = '' OR NOT ({either}))", params
    return f"({either})", params


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
        find = "instr(r.tags, ?) > 0" if tx.dialect == "sqlite" else "strpos(r.tags, ?) > 0"
        clauses.append(find)
        params.append(json.dumps(f.tag))
    if f.exposed_to is not None:
        sql, more = exposure_sql(f.exposed_to, "exposed")
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
    return [host_record(r) for r in rows]


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
