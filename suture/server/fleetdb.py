"""The fleet's tables: registration keys, per-host tokens, host history and rollout policies.

Tokens and keys are random (256 bits) and stored only as their sha256, so
a copy of the database does not let anyone report for a host or enrol one.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from suture import timefmt
from suture.server.store import Store


def digest(secret: str) -> str:
    """What is stored of a token or key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _stamp(now: datetime | None = None) -> str:
    return timefmt.utc(now)


@dataclass(frozen=True)
class RegistrationKey:
    """A key hosts enrol with; every host enrolled with it gets its tags."""

    key_id: str
    tags: tuple[str, ...]
    note: str
    created_at: str
    revoked: bool

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (never the key itself)."""
        return {
            "key_id": self.key_id,
            "tags": list(self.tags),
            "note": self.note,
            "created_at": self.created_at,
            "revoked": self.revoked,
        }


def create_key(store: Store, tags: tuple[str, ...], note: str = "") -> tuple[RegistrationKey, str]:
    """A new registration key; the secret is returned once and stored only hashed."""
    secret = "srk_" + secrets.token_urlsafe(32)
    key = RegistrationKey(secrets.token_hex(6), tags, note, _stamp(), False)
    store.execute(
        "INSERT INTO registration_keys (key_id, key_hash, tags, note, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (key.key_id, digest(secret), json.dumps(list(tags)), note, key.created_at),
    )
    return key, secret


def keys(store: Store) -> list[RegistrationKey]:
    """Every registration key, newest first."""
    rows = store.execute(
        "SELECT key_id, tags, note, created_at, revoked FROM registration_keys"
        " ORDER BY created_at DESC, key_id"
    )
    return [RegistrationKey(r[0], tuple(json.loads(r[1])), r[2], r[3], bool(r[4])) for r in rows]


def revoke_key(store: Store, key_id: str) -> bool:
    """Stop a key from enrolling hosts (enrolled hosts keep their tokens); False if unknown."""
    with store.transaction() as run:
        found = run("SELECT key_id FROM registration_keys WHERE key_id = ?", (key_id,))
        run("UPDATE registration_keys SET revoked = 1 WHERE key_id = ?", (key_id,))
    return bool(found)


def register(store: Store, key_secret: str, host_id: str) -> str | None:
    """Enrol ``host_id`` with a registration key; its new token, or None for a bad key.

    Enrolling again (a reinstalled host) replaces the host's token: the old one stops working.
    """
    token = "sht_" + secrets.token_urlsafe(32)
    with store.transaction() as run:
        rows = run(
            "SELECT key_id, tags FROM registration_keys WHERE key_hash = ? AND revoked = 0",
            (digest(key_secret),),
        )
        if not rows:
            return None
        key_id, tags = rows[0]
        run(
            "INSERT INTO registrations (host_id, token_hash, tags, key_id, registered_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (host_id) DO UPDATE SET"
            " token_hash = excluded.token_hash, tags = excluded.tags, key_id = excluded.key_id,"
            " registered_at = excluded.registered_at",
            (host_id, digest(token), tags, key_id, _stamp()),
        )
    return token


def host_for_token(store: Store, token: str) -> tuple[str, tuple[str, ...]] | None:
    """The host id and tags a token belongs to, or None."""
    rows = store.execute(
        "SELECT host_id, tags FROM registrations WHERE token_hash = ?", (digest(token),)
    )
    return (rows[0][0], tuple(json.loads(rows[0][1]))) if rows else None


def events(store: Store, host_id: str, limit: int = 200) -> list[dict[str, Any]]:
    """A host's history, newest first: each change of kernel, level, attempt or state."""
    rows = store.execute(
        "SELECT at, kernel_release, kernel_build_id, level, attempted_level, state, last_error"
        " FROM host_events WHERE host_id = ? ORDER BY at DESC LIMIT ?",
        (host_id, limit),
    )
    return [
        {
            "at": r[0],
            "kernel": {"release": r[1], "build_id": r[2]},
            "level": int(r[3]),
            "attempted_level": int(r[4]),
            "state": r[5],
            "last_error": r[6],
        }
        for r in rows
    ]


def policy(store: Store, channel: str) -> dict[str, Any]:
    """The stored rollout policy of a channel (JSON); {} when none was set."""
    rows = store.execute("SELECT policy FROM rollouts WHERE channel = ?", (channel,))
    data: dict[str, Any] = json.loads(rows[0][0]) if rows else {}
    return data


def set_policy(store: Store, channel: str, data: dict[str, Any]) -> None:
    """Replace a channel's rollout policy."""
    store.execute(
        "INSERT INTO rollouts (channel, policy, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT (channel) DO UPDATE SET policy = excluded.policy,"
        " updated_at = excluded.updated_at",
        (channel, json.dumps(data, sort_keys=True), _stamp()),
    )


def attempts(store: Store, channel: str, level: int) -> tuple[int, int]:
    """Hosts on ``channel`` that tried ``level``: (failed, succeeded)."""
    # Two counts an index answers (hosts_attempts, hosts_level), not a pass over every
    # host of the channel: this runs on every failed check-in, under the store's lock.
    rows = store.execute(
        "SELECT"
        " (SELECT COUNT(*) FROM hosts WHERE channel = ? AND state = 'failed'"
        " AND attempted_level = ?),"
        " (SELECT COUNT(*) FROM hosts WHERE channel = ? AND level = ? AND state = 'patched')",
        (channel, level, channel, level),
    )
    failed, succeeded = rows[0] if rows else (0, 0)
    return int(failed or 0), int(succeeded or 0)
