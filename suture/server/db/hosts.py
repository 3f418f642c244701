"""Hosts and their history: each check-in's write, and reads of one host.

A check-in is one write transaction: the host's row is read and locked, its
check-in allowance counted (a token bucket kept in the row, so every server
process sees the same count), the row replaced, its userspace rows (check-in
format 3; none for formats 1 and 2) replaced, and a history event appended
when its kernel, level, attempted level or state changed. History is kept
bounded: each host keeps its newest ``keep_events`` events.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from suture import timefmt
from suture.contract.checkin import Checkin, Library
from suture.server.db.pool import Row, Store, Tx

HOST_COLUMNS = (
    "h.host_id, h.hostname, h.kernel_release, h.kernel_build_id, h.level, h.state,"
    " h.last_error, h.agent_version, h.patches, h.address, h.first_seen, h.last_seen,"
    " h.channel, h.uptime, h.functions, h.attempted_level, r.tags, h.build_since, r.revoked,"
    " r.key_id"
)
HOSTS_JOINED = "hosts h LEFT JOIN registrations r ON r.host_id = h.host_id"
LIBRARY_COLUMNS = (
    "u.host_id, u.soname, u.build_id, u.level, u.name, u.cves, u.state, u.patched, u.unpatched,"
    " u.failed, u.refused"
)
MAX_IN = 500  # host ids in one IN (...) list


def stamp(when: float) -> str:
    """Unix time as the store's ISO 8601 text (UTC, seconds), which sorts as time does."""
    return timefmt.utc(when)


@dataclass(frozen=True)
class HostRecord:
    """A host as the server last heard of it."""

    checkin: Checkin
    address: str  # where the last check-in came from
    first_seen: str  # ISO 8601, UTC
    last_seen: str
    tags: tuple[str, ...] = ()  # from the registration key the host enrolled with
    build_since: float | None = None  # unix time it first checked in on this kernel build
    token: str = "active"  # noqa: S105 - its host token: active, revoked, or none (never enrolled)
    key_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The host for the API."""
        c = self.checkin
        return {
            "host_id": c.host_id,
            "hostname": c.hostname,
            "kernel": {"release": c.release, "build_id": c.build_id},
            "level": c.level,
            "state": c.state,
            "last_error": c.last_error,
            "agent_version": c.agent_version,
            "patches": list(c.patches),
            "channel": c.channel,
            "uptime": c.uptime,
            "functions": list(c.functions),
            "attempted_level": c.attempted_level,
            "userspace": [row.to_document() for row in c.userspace],
            "tags": list(self.tags),
            "address": self.address,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "token": self.token,
            "key_id": self.key_id,
        }


def host_record(r: Row) -> HostRecord:
    """A row of :data:`HOST_COLUMNS` as a record."""
    token = "none" if r[18] is None else "revoked" if r[18] else "active"
    return HostRecord(
        checkin=Checkin(
            host_id=r[0],
            hostname=r[1],
            release=r[2],
            build_id=r[3],
            level=int(r[4]),
            state=r[5],
            last_error=r[6],
            agent_version=r[7],
            patches=tuple(json.loads(r[8])),
            channel=r[12],
            uptime=None if r[13] is None else int(r[13]),
            functions=tuple(json.loads(r[14])),
            attempted_level=int(r[15]),
        ),
        address=r[9],
        first_seen=r[10],
        last_seen=r[11],
        tags=tuple(json.loads(r[16])) if r[16] else (),
        build_since=None if r[17] is None else float(r[17]),
        token=token,
        key_id=r[19] or "",
    )


def library(r: Row) -> Library:
    """A row of :data:`LIBRARY_COLUMNS` (its host id aside) as the check-in gave it."""
    return Library(
        soname=r[1],
        build_id=r[2],
        level=int(r[3]),
        name=r[4],
        cves=tuple(json.loads(r[5])),
        state=r[6],
        patched=int(r[7]),
        unpatched=int(r[8]),
        failed=int(r[9]),
        refused=tuple(sorted(json.loads(r[10]).items())),
    )


def libraries_of(tx: Tx, host_ids: Sequence[str]) -> dict[str, tuple[Library, ...]]:
    """The userspace rows of these hosts, by host id, each host's by build id."""
    found: dict[str, list[Library]] = {}
    for at in range(0, len(host_ids), MAX_IN):
        chunk = host_ids[at : at + MAX_IN]
        marks = ", ".join("?" * len(chunk))
        for r in tx.rows(
            f"SELECT {LIBRARY_COLUMNS} FROM host_libraries u WHERE u.host_id IN ({marks})"  # noqa: S608 - markers only
            " ORDER BY u.host_id, u.build_id",
            chunk,
        ):
            found.setdefault(r[0], []).append(library(r))
    return {k: tuple(v) for k, v in found.items()}


def with_libraries(tx: Tx, records: Iterable[HostRecord]) -> list[HostRecord]:
    """The records with their hosts' userspace rows read in (one query per 500 hosts)."""
    records = list(records)
    rows = libraries_of(tx, [r.checkin.host_id for r in records])
    return [
        replace(r, checkin=replace(r.checkin, userspace=rows[r.checkin.host_id]))
        if r.checkin.host_id in rows
        else r
        for r in records
    ]


@dataclass(frozen=True)
class Allowance:
    """How often a host may check in: ``burst`` at once, then one per ``1 / per_s`` seconds."""

    burst: float
    per_s: float


@dataclass(frozen=True)
class Recorded:
    """What became of a check-in: stored, or refused until ``retry_after`` seconds pass.

    ``policy``: the channel's rollout policy as stored (JSON; {} when none), read in
    the same transaction, for the directive.
    """

    stored: bool
    retry_after: float = 0.0
    policy: dict[str, Any] | None = None
    owner: tuple[str, tuple[str, ...]] | None = None  # the token's host id and tags


_UPSERT = (
    "INSERT INTO hosts (host_id, hostname, kernel_release, kernel_build_id, level, state,"
    " last_error, agent_version, patches, address, first_seen, last_seen, channel, uptime,"
    " functions, attempted_level, build_since, event_seq, bucket, bucket_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (host_id) DO UPDATE SET hostname = excluded.hostname,"
    " kernel_release = excluded.kernel_release, kernel_build_id = excluded.kernel_build_id,"
    " level = excluded.level, state = excluded.state, last_error = excluded.last_error,"
    " agent_version = excluded.agent_version, patches = excluded.patches,"
    " address = excluded.address, last_seen = excluded.last_seen, channel = excluded.channel,"
    " uptime = excluded.uptime, functions = excluded.functions,"
    " attempted_level = excluded.attempted_level, build_since = excluded.build_since,"
    " event_seq = excluded.event_seq, bucket = excluded.bucket, bucket_at = excluded.bucket_at"
)
_LIBRARY_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _write_libraries(tx: Tx, host_id: str, rows: tuple[Library, ...]) -> None:
    """Replace the host's userspace rows (sent, not waited for: the commit carries them)."""
    tx.send("DELETE FROM host_libraries WHERE host_id = ?", (host_id,))
    if not rows:
        return
    values: list[Any] = []
    for u in rows:
        values += [
            host_id,
            u.soname,
            u.build_id,
            u.level,
            u.name,
            json.dumps(list(u.cves)),
            u.state,
            u.patched,
            u.unpatched,
            u.failed,
            json.dumps(dict(u.refused), sort_keys=True),
            sum(n for _, n in u.refused),
        ]
    marks = ", ".join([_LIBRARY_ROW] * len(rows))
    tx.send(
        "INSERT INTO host_libraries (host_id, soname, build_id, level, name, cves, state,"  # noqa: S608 - markers only
        f" patched, unpatched, failed, refused, refused_total) VALUES {marks}",
        values,
    )


def record(
    store: Store,
    c: Checkin,
    address: str,
    now: float,
    *,
    allowance: Allowance | None = None,
    keep_events: int = 100,
    token_hash: str = "",
) -> Recorded:
    """Store a check-in as the host's last report (``first_seen`` is kept).

    Refused (nothing written) when the host has used up its ``allowance``, or
    with ``token_hash`` when that live token is not the reporting host's
    (``owner`` is then whose it is, or None). The token, the host's row and
    the channel's rollout policy are read together: on PostgreSQL, a
    check-in is two round trips (the reads; the writes and the commit).
    """
    with store.write() as tx:
        token_row = tx.start(
            "SELECT host_id, tags FROM registrations WHERE token_hash = ? AND revoked = 0",
            (token_hash,),
        )
        host_row = tx.start(
            tx.locked(
                "SELECT kernel_release, kernel_build_id, level, attempted_level, state,"
                " event_seq, bucket, bucket_at, build_since FROM hosts WHERE host_id = ?"
            ),
            (c.host_id,),
        )
        policy_row = tx.start("SELECT policy FROM rollouts WHERE channel = ?", (c.channel,))
        owners, found, rows = token_row(), host_row(), policy_row()
        owner = (owners[0][0], tuple(json.loads(owners[0][1]))) if owners else None
        if token_hash and (owner is None or owner[0] != c.host_id):
            return Recorded(False, owner=owner)
        before = found[0] if found else None
        policy: dict[str, Any] = json.loads(rows[0][0]) if rows else {}
        bucket = allowance.burst if allowance else 0.0
        if allowance is not None and before is not None and before[6] is not None:
            bucket = min(allowance.burst, before[6] + (now - before[7]) * allowance.per_s)
            if bucket < 1:
                return Recorded(False, (1 - bucket) / allowance.per_s, policy, owner)
        bucket = max(0.0, bucket - 1)
        same_build = before is not None and (before[0], before[1]) == (c.release, c.build_id)
        build_since = before[8] if same_build and before and before[8] is not None else now
        event = (c.release, c.build_id, c.level, c.attempted_level, c.state)
        changed = before is None or tuple(before[:5]) != event
        seq = (before[5] if before else 0) + changed
        at = stamp(now)
        tx.send(
            _UPSERT,
            (
                c.host_id,
                c.hostname,
                c.release,
                c.build_id,
                c.level,
                c.state,
                c.last_error,
                c.agent_version,
                json.dumps(list(c.patches)),
                address,
                at,
                at,
                c.channel,
                c.uptime,
                json.dumps(list(c.functions)),
                c.attempted_level,
                build_since,
                seq,
                bucket if allowance else None,
                now if allowance else None,
            ),
        )
        _write_libraries(tx, c.host_id, c.userspace)
        if changed:
            tx.send(
                "INSERT INTO host_events (host_id, seq, at, kernel_release, kernel_build_id,"
                " level, attempted_level, state, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (c.host_id, seq, at, *event, c.last_error),
            )
            if seq > keep_events:
                tx.send(
                    "DELETE FROM host_events WHERE host_id = ? AND seq <= ?",
                    (c.host_id, seq - keep_events),
                )
    return Recorded(True, 0.0, policy, owner)


def get(store: Store, host_id: str) -> HostRecord | None:
    """One host with its userspace rows, or None."""
    with store.read() as tx:
        row = tx.one(f"SELECT {HOST_COLUMNS} FROM {HOSTS_JOINED} WHERE h.host_id = ?", (host_id,))  # noqa: S608 - constant SQL
        return with_libraries(tx, [host_record(row)])[0] if row else None


def delete(store: Store, host_id: str) -> bool:
    """Forget a host: its report, its history and its enrolment. False when unknown."""
    with store.write() as tx:
        gone = tx.run("DELETE FROM hosts WHERE host_id = ?", (host_id,))
        gone += tx.run("DELETE FROM registrations WHERE host_id = ?", (host_id,))
        tx.run("DELETE FROM host_events WHERE host_id = ?", (host_id,))
        tx.run("DELETE FROM host_libraries WHERE host_id = ?", (host_id,))
    return gone > 0


def events(store: Store, host_id: str, before_seq: int | None, limit: int) -> list[dict[str, Any]]:
    """A host's history, newest first, from below ``before_seq`` (None: the newest)."""
    with store.read() as tx:
        rows = tx.rows(
            "SELECT seq, at, kernel_release, kernel_build_id, level, attempted_level, state,"
            " last_error FROM host_events WHERE host_id = ? AND seq < ?"
            " ORDER BY seq DESC, at DESC LIMIT ?",
            (host_id, 2**62 if before_seq is None else before_seq, limit),
        )
    return [
        {
            "seq": int(r[0]),
            "at": r[1],
            "kernel": {"release": r[2], "build_id": r[3]},
            "level": int(r[4]),
            "attempted_level": int(r[5]),
            "state": r[6],
            "last_error": r[7],
        }
        for r in rows
    ]


def prune_events(store: Store, older_than: float) -> int:
    """Drop history events older than ``older_than`` (unix time); how many went."""
    with store.write() as tx:
        return tx.run("DELETE FROM host_events WHERE at < ?", (stamp(older_than),))
