"""What the fleet's logic works with in one server process: the database, the repository, time.

Nothing here is the only copy of anything: the database holds the fleet's
state (hosts, sessions, rate limits, rollouts), the repository folder holds
the levels. The catalog is a cache of the repository's files and the request
metrics this process's own share, written to the database every few seconds.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from suture.repo.layout import Layout
from suture.server.config import Limits, Retention
from suture.server.db import Store
from suture.server.fleet.catalog import Catalog
from suture.server.fleet.metrics import RequestMetrics
from suture.server.log import ServerLog

Clock = Callable[[], float]  # unix time, s


@dataclass
class Fleet:
    """The server's state in one process (see the module docstring)."""

    store: Store
    layout: Layout
    catalog: Catalog
    log: ServerLog = field(default_factory=ServerLog)
    admin_token: str | None = None
    vex_key: Any = None  # the Ed25519PrivateKey that signs OpenVEX documents; None: no VEX
    limits: Limits = field(default_factory=Limits)
    retention: Retention = field(default_factory=Retention)
    clock: Clock = time.time  # the only source of time for the fleet's logic
    requests: RequestMetrics = field(default_factory=RequestMetrics)
    instance_id: str = field(default_factory=lambda: secrets.token_hex(8))
    started_at: float = 0.0

    def now(self) -> float:
        """Unix time now."""
        return self.clock()
