"""What a server process does every few seconds: report its metrics, and prune in its turn.

Pruning (old history, rate-limit counters, expired sessions) is done by one
process an hour, whichever claims the turn first.
"""

from __future__ import annotations

from suture.server.db import hosts, instances, limits
from suture.server.fleet.context import Fleet

EVERY = 5.0  # s between two ticks of one process
PRUNE_EVERY = 3600.0  # s between two prunings, whichever process does them
DAY = 86400.0


def tick(fleet: Fleet) -> None:
    """One round: this process's metrics to the database, and pruning when it is our turn."""
    now = fleet.now()
    instances.report(
        fleet.store, fleet.instance_id, fleet.started_at, now, fleet.requests.snapshot()
    )
    if not instances.claim(fleet.store, "prune", now, PRUNE_EVERY):
        return
    gone = hosts.prune_events(fleet.store, now - fleet.retention.events_days * DAY)
    gone_limits = limits.prune(fleet.store, now, fleet.limits.failure_window)
    gone_sessions = instances.prune_sessions(fleet.store, now)
    fleet.log.info("pruned", events=gone, rate_limits=gone_limits, sessions=gone_sessions)
