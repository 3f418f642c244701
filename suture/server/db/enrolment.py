"""Registration keys and host tokens: who may enrol, and which token speaks for which host.

Keys and tokens are stored only as their sha256 (:mod:`suture.server.fleet.enrolment`
makes and hashes them), so a copy of the database lets no one report for a
host or enrol one.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from suture.server.db.hosts import stamp
from suture.server.db.pool import Store


@dataclass(frozen=True)
class KeyRecord:
    """A registration key (never its secret): its tags, limits and use."""

    key_id: str
    tags: tuple[str, ...]
    note: str
    created_at: str
    revoked: bool
    max_hosts: int | None  # None: no limit
    expires_at: float | None  # unix time; None: never
    enrolled: int  # hosts enrolled with it whose token is not revoked

    def to_dict(self, now: float) -> dict[str, Any]:
        """The JSON form."""
        return {
            "key_id": self.key_id,
            "tags": list(self.tags),
            "note": self.note,
            "created_at": self.created_at,
            "revoked": self.revoked,
            "max_hosts": self.max_hosts,
            "expires_at": None if self.expires_at is None else stamp(self.expires_at),
            "expired": self.expires_at is not None and self.expires_at <= now,
            "enrolled": self.enrolled,
        }


class Enrolment(StrEnum):
    """How an enrolment went: taken (the first three) or refused (why)."""

    NEW = "enrolled"
    ROTATED = "rotated"  # the host showed its current token: it gets a new one
    REENROLLED = "reenrolled"  # an operator allowed the host id to enrol again
    BAD_KEY = "bad_key"  # unknown or revoked key
    KEY_EXPIRED = "key_expired"
    KEY_FULL = "key_full"  # the key's enrolment limit is reached
    TAKEN = "taken"  # the host id is enrolled, and no current token was shown
    BLOCKED = "blocked"  # the host id's token was revoked and it may not enrol again

    @property
    def taken(self) -> bool:
        """True when the host now holds a new token."""
        return self in (Enrolment.NEW, Enrolment.ROTATED, Enrolment.REENROLLED)


_KEY_COLUMNS = (
    "k.key_id, k.tags, k.note, k.created_at, k.revoked, k.max_hosts, k.expires_at,"
    " (SELECT COUNT(*) FROM registrations r WHERE r.key_id = k.key_id AND r.revoked = 0)"
)


def _key(r: tuple[Any, ...]) -> KeyRecord:
    return KeyRecord(
        key_id=r[0],
        tags=tuple(json.loads(r[1])),
        note=r[2],
        created_at=r[3],
        revoked=bool(r[4]),
        max_hosts=None if r[5] is None else int(r[5]),
        expires_at=None if r[6] is None else float(r[6]),
        enrolled=int(r[7]),
    )


def create_key(
    store: Store,
    *,
    key_id: str,
    key_hash: str,
    tags: tuple[str, ...],
    note: str,
    now: float,
    max_hosts: int | None = None,
    expires_at: float | None = None,
) -> KeyRecord:
    """Store a new key."""
    with store.write() as tx:
        tx.run(
            "INSERT INTO registration_keys (key_id, key_hash, tags, note, created_at, max_hosts,"
            " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key_id, key_hash, json.dumps(list(tags)), note, stamp(now), max_hosts, expires_at),
        )
    return KeyRecord(key_id, tags, note, stamp(now), False, max_hosts, expires_at, 0)


def keys(store: Store) -> list[KeyRecord]:
    """Every registration key, newest first."""
    with store.read() as tx:
        rows = tx.rows(
            f"SELECT {_KEY_COLUMNS} FROM registration_keys k"  # noqa: S608 - constant SQL
            " ORDER BY k.created_at DESC, k.key_id"
        )
    return [_key(r) for r in rows]


def revoke_key(store: Store, key_id: str, *, revoke_hosts: bool = False) -> int | None:
    """Stop a key from enrolling hosts; with ``revoke_hosts``, revoke their tokens too.

    Returns:
        How many host tokens were revoked; None for an unknown key.
    """
    with store.write() as tx:
        if not tx.run("UPDATE registration_keys SET revoked = 1 WHERE key_id = ?", (key_id,)):
            return None
        if not revoke_hosts:
            return 0
        return tx.run(
            "UPDATE registrations SET revoked = 1, reenrol = 0 WHERE key_id = ? AND revoked = 0",
            (key_id,),
        )


def enrol(  # noqa: PLR0911 - one return per way an enrolment ends
    store: Store,
    key_hash: str,
    host_id: str,
    token_hash: str,
    now: float,
    *,
    shown_hash: str = "",
) -> Enrolment:
    """Enrol ``host_id`` with the key of ``key_hash``, giving it the token of ``token_hash``.

    A host id belongs to the host that enrolled it: it is taken again only
    with that host's current token (``shown_hash``), or after an operator
    revoked the token and allowed the id to enrol again.
    """
    with store.write() as tx:
        key = tx.one(
            tx.locked(
                "SELECT key_id, tags, revoked, max_hosts, expires_at FROM registration_keys"
                " WHERE key_hash = ?"
            ),
            (key_hash,),
        )
        if key is None or key[2]:
            return Enrolment.BAD_KEY
        key_id, tags, _, max_hosts, expires_at = key
        if expires_at is not None and expires_at <= now:
            return Enrolment.KEY_EXPIRED
        held = tx.one(
            tx.locked(
                "SELECT token_hash, revoked, reenrol, key_id FROM registrations WHERE host_id = ?"
            ),
            (host_id,),
        )
        if held is None:
            outcome = Enrolment.NEW
        elif not held[1]:
            if not (shown_hash and hmac.compare_digest(shown_hash, held[0])):
                return Enrolment.TAKEN
            outcome = Enrolment.ROTATED
        elif not held[2]:
            return Enrolment.BLOCKED
        else:
            outcome = Enrolment.REENROLLED
        if max_hosts is not None and (held is None or held[3] != key_id or held[1]):
            row = tx.one(
                "SELECT COUNT(*) FROM registrations WHERE key_id = ? AND revoked = 0", (key_id,)
            )
            if row and int(row[0]) >= max_hosts:
                return Enrolment.KEY_FULL
        values = (token_hash, tags, key_id, stamp(now), host_id)
        if held is None:
            # Two first enrolments of one new id with different keys: the second finds the row.
            written = tx.run(
                "INSERT INTO registrations (token_hash, tags, key_id, registered_at, host_id)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (host_id) DO NOTHING",
                values,
            )
            return outcome if written else Enrolment.TAKEN
        tx.run(
            "UPDATE registrations SET token_hash = ?, tags = ?, key_id = ?, registered_at = ?,"
            " revoked = 0, reenrol = 0 WHERE host_id = ?",
            values,
        )
    return outcome


def host_for_token(store: Store, token_hash: str) -> tuple[str, tuple[str, ...]] | None:
    """The host id and tags of a live token, or None."""
    with store.read() as tx:
        row = tx.one(
            "SELECT host_id, tags FROM registrations WHERE token_hash = ? AND revoked = 0",
            (token_hash,),
        )
    return (row[0], tuple(json.loads(row[1]))) if row else None


def revoke_host(store: Store, host_id: str, *, allow_reenrol: bool) -> bool:
    """Revoke a host's token; with ``allow_reenrol`` its id may enrol again with a key.

    Returns:
        False for a host that never enrolled.
    """
    with store.write() as tx:
        return (
            tx.run(
                "UPDATE registrations SET revoked = 1, reenrol = ? WHERE host_id = ?",
                (int(allow_reenrol), host_id),
            )
            > 0
        )
