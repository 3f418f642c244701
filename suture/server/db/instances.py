"""What each server process reports of itself (request metrics), and maintenance turns.

Each process writes its request metrics here every few seconds, so
``/metrics`` from any process shows the sum of all of them. Maintenance
(pruning old history, counters, sessions) runs in whichever process claims
its turn first (:func:`claim`).
"""

from __future__ import annotations

import json
from typing import Any

from suture.server.db.pool import Store


def report(store: Store, instance_id: str, started_at: float, now: float, data: Any) -> None:
    """Store this process's metrics snapshot."""
    with store.read() as tx:
        tx.run(
            "INSERT INTO instances (instance_id, started_at, seen_at, metrics)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (instance_id) DO UPDATE SET"
            " seen_at = excluded.seen_at, metrics = excluded.metrics",
            (instance_id, started_at, now, json.dumps(data, sort_keys=True)),
        )


def snapshots(store: Store) -> dict[str, tuple[float, Any]]:
    """Every process's last snapshot: instance id -> (when, data)."""
    with store.read() as tx:
        rows = tx.rows("SELECT instance_id, seen_at, metrics FROM instances")
    return {r[0]: (float(r[1]), json.loads(r[2])) for r in rows}


def claim(store: Store, task: str, now: float, every: float) -> bool:
    """True for the one process that takes ``task``'s turn (none ran in ``every`` seconds)."""
    with store.write() as tx:
        tx.run(
            "INSERT INTO maintenance (task, last_run) VALUES (?, 0) ON CONFLICT (task) DO NOTHING",
            (task,),
        )
        return (
            tx.run(
                "UPDATE maintenance SET last_run = ? WHERE task = ? AND last_run <= ?",
                (now, task, now - every),
            )
            > 0
        )


def prune_sessions(store: Store, now: float) -> int:
    """Drop expired dashboard sessions; how many went."""
    with store.read() as tx:
        return tx.run("DELETE FROM sessions WHERE expires_at <= ?", (now,))
