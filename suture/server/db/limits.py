"""Rate-limit counters in the database: fixed windows per (scope, subject), shared by processes.

A counter counts the hits of one subject (a client address) in one scope
(``login``, ``admin``, ``enrol``) since its window began; a hit after the
window starts a new one. One statement per hit (an upsert that returns the
count), so two server processes count together.
"""

from __future__ import annotations

from suture.server.db.pool import Store


def hit(store: Store, scope: str, subject: str, now: float, window: float) -> int:
    """Count one hit; the hits in the current window, this one included."""
    with store.read() as tx:
        row = tx.one(
            "INSERT INTO rate_limits (scope, subject, window_start, hits) VALUES (?, ?, ?, 1)"
            " ON CONFLICT (scope, subject) DO UPDATE SET"
            " hits = CASE WHEN rate_limits.window_start <= ? THEN 1 ELSE rate_limits.hits + 1 END,"
            " window_start = CASE WHEN rate_limits.window_start <= ? THEN excluded.window_start"
            " ELSE rate_limits.window_start END"
            " RETURNING hits, window_start",
            (scope, subject, now, now - window, now - window),
        )
    return int(row[0]) if row else 1


def hits(store: Store, scope: str, subject: str, now: float, window: float) -> tuple[int, float]:
    """(hits in the current window, seconds until it ends); (0, 0) when none."""
    with store.read() as tx:
        row = tx.one(
            "SELECT hits, window_start FROM rate_limits WHERE scope = ? AND subject = ?"
            " AND window_start > ?",
            (scope, subject, now - window),
        )
    if row is None:
        return 0, 0.0
    return int(row[0]), float(row[1]) + window - now


def prune(store: Store, now: float, window: float) -> int:
    """Drop counters whose window ended; how many went."""
    with store.read() as tx:
        return tx.run("DELETE FROM rate_limits WHERE window_start <= ?", (now - window,))
