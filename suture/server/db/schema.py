"""The database schema, as numbered steps applied at start (:func:`migrate`).

Step N brings the schema from version N-1 to N. Only add steps; never edit
one: a database in use is at some step, and the next server applies the
rest. ``schema_version`` records the steps applied. A step is a tuple of
statements for both databases, or a dict of tuples per dialect where they
differ.

Several server processes may start together on one database: each step runs
in a write transaction that first takes a lock (PostgreSQL: an advisory
lock; SQLite: the write lock of ``BEGIN IMMEDIATE``) and reads the version
again, so a step never runs twice.
"""

from __future__ import annotations

from typing import Any

from suture.errors import DatabaseError
from suture.server.db.pool import Store

Step = tuple[str, ...] | dict[str, tuple[str, ...]]
_NUMBER_EVENTS = (
    "UPDATE host_events SET seq = (SELECT COUNT(*) FROM host_events e"
    " WHERE e.host_id = host_events.host_id AND e.at <= host_events.at)",
    "UPDATE hosts SET event_seq = (SELECT COALESCE(MAX(e.seq), 0) FROM host_events e"
    " WHERE e.host_id = hosts.host_id)",
)

MIGRATIONS: tuple[Step, ...] = (
    (
        """CREATE TABLE hosts (
            host_id TEXT PRIMARY KEY,
            hostname TEXT NOT NULL,
            kernel_release TEXT NOT NULL,
            kernel_build_id TEXT NOT NULL,
            level INTEGER NOT NULL,
            state TEXT NOT NULL,
            last_error TEXT,
            agent_version TEXT NOT NULL,
            patches TEXT NOT NULL,
            address TEXT NOT NULL,
            first_seen TEXT NOT NULL,
            last_seen TEXT NOT NULL
        )""",
        "CREATE INDEX hosts_kernel ON hosts (kernel_release, kernel_build_id)",
    ),
    (  # 2: the fleet: registration, per-host tokens, history, rollouts
        "ALTER TABLE hosts ADD COLUMN channel TEXT NOT NULL DEFAULT 'stable'",
        "ALTER TABLE hosts ADD COLUMN uptime INTEGER",
        "ALTER TABLE hosts ADD COLUMN functions TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE hosts ADD COLUMN attempted_level INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX hosts_level ON hosts (channel, level, state)",
        """CREATE TABLE registration_keys (
            key_id TEXT PRIMARY KEY,
            key_hash TEXT NOT NULL UNIQUE,
            tags TEXT NOT NULL,
            note TEXT NOT NULL,
            created_at TEXT NOT NULL,
            revoked INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE registrations (
            host_id TEXT PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,
            tags TEXT NOT NULL,
            key_id TEXT NOT NULL,
            registered_at TEXT NOT NULL
        )""",
        """CREATE TABLE host_events (
            host_id TEXT NOT NULL,
            at TEXT NOT NULL,
            kernel_release TEXT NOT NULL,
            kernel_build_id TEXT NOT NULL,
            level INTEGER NOT NULL,
            attempted_level INTEGER NOT NULL,
            state TEXT NOT NULL,
            last_error TEXT
        )""",
        "CREATE INDEX host_events_host ON host_events (host_id, at)",
        """CREATE TABLE rollouts (
            channel TEXT PRIMARY KEY,
            policy TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
    ),
    (  # 3: a failed check-in counts the hosts that failed a level without a scan of its channel
        "CREATE INDEX hosts_attempts ON hosts (channel, state, attempted_level)",
    ),
    (  # 4: production: who may enrol, credible halts per build, history kept bounded, and the
        # state several server processes share (sessions, rate limits, metrics)
        "ALTER TABLE hosts ADD COLUMN build_since DOUBLE PRECISION",  # unix time, this build
        "ALTER TABLE hosts ADD COLUMN event_seq INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE hosts ADD COLUMN bucket DOUBLE PRECISION",  # check-ins it may still send
        "ALTER TABLE hosts ADD COLUMN bucket_at DOUBLE PRECISION",  # unix time of that count
        "CREATE INDEX hosts_build ON hosts (channel, kernel_build_id, state, attempted_level)",
        "ALTER TABLE host_events ADD COLUMN seq INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX host_events_seq ON host_events (host_id, seq)",
        "ALTER TABLE registrations ADD COLUMN revoked INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE registrations ADD COLUMN reenrol INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX registrations_key ON registrations (key_id)",
        "ALTER TABLE registration_keys ADD COLUMN max_hosts INTEGER",
        "ALTER TABLE registration_keys ADD COLUMN expires_at DOUBLE PRECISION",
        """CREATE TABLE sessions (
            id_hash TEXT PRIMARY KEY,
            csrf TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            flash TEXT NOT NULL DEFAULT ''
        )""",
        """CREATE TABLE rate_limits (
            scope TEXT NOT NULL,
            subject TEXT NOT NULL,
            window_start DOUBLE PRECISION NOT NULL,
            hits INTEGER NOT NULL,
            PRIMARY KEY (scope, subject)
        )""",
        """CREATE TABLE instances (
            instance_id TEXT PRIMARY KEY,
            started_at DOUBLE PRECISION NOT NULL,
            seen_at DOUBLE PRECISION NOT NULL,
            metrics TEXT NOT NULL
        )""",
        """CREATE TABLE maintenance (
            task TEXT PRIMARY KEY,
            last_run DOUBLE PRECISION NOT NULL
        )""",
    ),
    {  # 5: what hosts seen before version 4 had: on their build since their first check-in,
        # and their history numbered in time order
        "sqlite": (
            "UPDATE hosts SET build_since = CAST(strftime('%s', first_seen) AS REAL)",
            *_NUMBER_EVENTS,
        ),
        "postgresql": (
            "UPDATE hosts SET build_since = EXTRACT(EPOCH FROM CAST(first_seen AS TIMESTAMPTZ))",
            *_NUMBER_EVENTS,
        ),
    },
    (  # 6: check-in format 3: each host's library builds with a userspace level, as its last
        # check-in gave them (replaced by each check-in; at most 32 rows a host)
        """CREATE TABLE host_libraries (
            host_id TEXT NOT NULL,
            build_id TEXT NOT NULL,
            soname TEXT NOT NULL,
            level INTEGER NOT NULL,
            name TEXT NOT NULL,
            cves TEXT NOT NULL,
            state TEXT NOT NULL,
            patched INTEGER NOT NULL,
            unpatched INTEGER NOT NULL,
            failed INTEGER NOT NULL,
            refused TEXT NOT NULL,
            refused_total INTEGER NOT NULL,
            PRIMARY KEY (host_id, build_id)
        )""",
        "CREATE INDEX host_libraries_build ON host_libraries (soname, build_id, level)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
_PG_LOCK = 0x5375747572  # pg_advisory_xact_lock key: "Sutur"


def statements(step: Step, dialect: str) -> tuple[str, ...]:
    """The statements of one step for one database."""
    return step[dialect] if isinstance(step, dict) else step


def version(store: Store) -> int:
    """The schema version of the database (0 for a new one)."""
    with store.write() as tx:
        tx.run("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = tx.one("SELECT MAX(version) FROM schema_version")
    return int(row[0] or 0) if row else 0


def migrate(store: Store) -> int:
    """Apply the missing steps, each in its own transaction; returns the version.

    Raises:
        DatabaseError: the database is newer than this server, or a step failed.
    """
    current = version(store)
    _check_not_newer(current)
    while current < SCHEMA_VERSION:
        with store.write() as tx:
            if tx.dialect == "postgresql":
                tx.rows("SELECT pg_advisory_xact_lock(?)", (_PG_LOCK,))
            row = tx.one("SELECT MAX(version) FROM schema_version")
            current = int(row[0] or 0) if row else 0
            _check_not_newer(current)
            if current == SCHEMA_VERSION:
                break  # another process got there first
            for sql in statements(MIGRATIONS[current], tx.dialect):
                tx.run(sql)
            tx.run("INSERT INTO schema_version (version) VALUES (?)", (current + 1,))
        current += 1
    return SCHEMA_VERSION


def _check_not_newer(current: Any) -> None:
    if current > SCHEMA_VERSION:
        raise DatabaseError(
            f"the database is at schema version {current}, this server knows {SCHEMA_VERSION}",
            hint="run the newer suture server that wrote it",
        )
