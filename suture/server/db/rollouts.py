"""Rollout policies (JSON per channel), changed under a row lock, and the counts a halt reads.

Every server process reads a channel's policy from here for each check-in,
and changes it in one transaction that locks its row (:func:`change`): an
automatic halt decided in one process holds in all of them at once, and two
operators' changes never overwrite each other.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from suture.server.db.hosts import stamp
from suture.server.db.pool import Store, Tx


def policy(store: Store, channel: str) -> dict[str, Any]:
    """The stored policy of a channel (JSON); {} when none was set."""
    with store.read() as tx:
        row = tx.one("SELECT policy FROM rollouts WHERE channel = ?", (channel,))
    data: dict[str, Any] = json.loads(row[0]) if row else {}
    return data


def policies(store: Store) -> dict[str, dict[str, Any]]:
    """Every stored policy, by channel."""
    with store.read() as tx:
        rows = tx.rows("SELECT channel, policy FROM rollouts")
    return {r[0]: json.loads(r[1]) for r in rows}


def change(
    store: Store,
    channel: str,
    edit: Callable[[Tx, dict[str, Any]], dict[str, Any] | None],
    now: float,
) -> dict[str, Any]:
    """Read a channel's policy locked, let ``edit`` decide, store what it returns.

    ``edit`` gets the transaction (for counts it needs under the lock) and the
    current policy; it returns the new policy, or None to leave it as it is.

    Returns:
        The policy now in force.
    """
    with store.write() as tx:
        # The row must exist to be locked: a channel without a policy gets an empty one.
        tx.run(
            "INSERT INTO rollouts (channel, policy, updated_at) VALUES (?, '{}', ?)"
            " ON CONFLICT (channel) DO NOTHING",
            (channel, stamp(now)),
        )
        row = tx.one(tx.locked("SELECT policy FROM rollouts WHERE channel = ?"), (channel,))
        current: dict[str, Any] = json.loads(row[0]) if row else {}
        new = edit(tx, current)
        if new is None:
            return current
        tx.run(
            "UPDATE rollouts SET policy = ?, updated_at = ? WHERE channel = ?",
            (json.dumps(new, sort_keys=True), stamp(now), channel),
        )
    return new


def credible_attempts(
    tx: Tx, channel: str, build: tuple[str, str], level: int, *, seen_before: float
) -> tuple[int, int]:
    """Hosts of one build (release, build id) and channel that tried ``level``: (failed, ok).

    Only hosts on that build since before ``seen_before`` (unix time) count: a
    host enrolled after the level was published has no history to vouch for it.
    """
    row = tx.one(
        "SELECT"
        " (SELECT COUNT(*) FROM hosts WHERE channel = ? AND kernel_build_id = ?"
        " AND kernel_release = ? AND state = 'failed' AND attempted_level = ?"
        " AND build_since < ?),"
        " (SELECT COUNT(*) FROM hosts WHERE channel = ? AND kernel_build_id = ?"
        " AND kernel_release = ? AND state = 'patched' AND level = ? AND build_since < ?)",
        (channel, build[1], build[0], level, seen_before) * 2,
    )
    failed, succeeded = row if row else (0, 0)
    return int(failed or 0), int(succeeded or 0)
