"""Where check-ins are kept: SQLite by default, PostgreSQL when given a ``postgresql://`` URL.

One class, :class:`Store`, over a DB-API connection; the two backends differ
only in how they connect and in the parameter marker (``?`` or ``%s``). The
schema carries its version in ``schema_version`` and :meth:`Store.migrate`
brings it up to :data:`SCHEMA_VERSION` at start, one transaction per step.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from suture import timefmt
from suture.errors import DatabaseError, UsageError
from suture.server.checkin import Checkin

STATE_ENV = "SUTURE_STATE_DIR"

# Step N brings the schema from version N-1 to N. Only add steps; never edit one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
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
)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class DbUrl:
    """Which database: ``kind`` is ``sqlite`` (``target`` a file path) or ``postgresql`` (a DSN)."""

    kind: str
    target: str

    @classmethod
    def parse(cls, url: str) -> DbUrl:
        """Read ``sqlite:///abs/path``, ``sqlite:relative/path`` or ``postgresql://...``.

        Raises:
            UsageError: another scheme, or no path.
        """
        scheme = urlsplit(url).scheme
        if scheme in ("postgresql", "postgres"):
            return cls("postgresql", url)
        if scheme == "sqlite":
            path = url.removeprefix("sqlite:").removeprefix("//")
            if path and path != "/":
                return cls("sqlite", path)
        raise UsageError(
            f"--db {url!r} is not a database URL Suture reads",
            hint="give sqlite:///path/to/file.db or postgresql://user@host/dbname",
        )

    def __str__(self) -> str:
        """The URL without a password, for logs."""
        if self.kind == "sqlite":
            return f"sqlite://{self.target}" if self.target.startswith("/") else self.target
        parts = urlsplit(self.target)
        if parts.password is None:
            return self.target
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()


def default_url() -> DbUrl:
    """``$SUTURE_STATE_DIR/server.db``, else ``$XDG_STATE_HOME/suture/server.db``.

    ``$XDG_STATE_HOME`` defaults to ``~/.local/state``: the database is the
    server's state, not part of the repository it serves.
    """
    if env := os.environ.get(STATE_ENV):
        return DbUrl("sqlite", str(Path(env) / "server.db"))
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return DbUrl("sqlite", str(Path(base) / "suture" / "server.db"))


@dataclass(frozen=True)
class HostRecord:
    """A host as the server last heard of it."""

    checkin: Checkin
    address: str  # the address the last check-in came from
    first_seen: str  # ISO 8601, UTC
    last_seen: str
    tags: tuple[str, ...] = ()  # from the registration key the host enrolled with

    def to_dict(self) -> dict[str, Any]:
        """The host for ``GET /api/v1/hosts``."""
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
            "tags": list(self.tags),
            "address": self.address,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
        }


HOST_COLUMNS = (
    "h.host_id, h.hostname, h.kernel_release, h.kernel_build_id, h.level, h.state,"
    " h.last_error, h.agent_version, h.patches, h.address, h.first_seen, h.last_seen,"
    " h.channel, h.uptime, h.functions, h.attempted_level, r.tags"
)


def host_record(r: Sequence[Any]) -> HostRecord:
    """A row of :data:`HOST_COLUMNS` as a record."""
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
    )


def _stamp(now: datetime | None) -> str:
    return timefmt.utc(now)


class _Cursor(Protocol):
    def fetchall(self) -> list[Any]: ...


class _Connection(Protocol):
    def execute(self, sql: Any, params: Sequence[Any] = ..., /) -> _Cursor: ...

    def close(self) -> None: ...


class Store:
    """Check-ins in a SQL database, safe to share between the server's threads.

    One connection in autocommit mode, used under a lock: check-ins are
    small and rare per host, so one writer at a time is plenty for now.
    """

    def __init__(self, conn: _Connection, *, marker: str, errors: tuple[type[Exception], ...]):
        self._conn = conn
        self._marker = marker
        self._errors = errors
        self._lock = threading.Lock()

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            cursor = self._conn.execute(sql.replace("?", self._marker), params)
            return cursor.fetchall() if sql.lstrip().upper().startswith("SELECT") else []
        except self._errors as e:
            raise DatabaseError(
                f"database: {e}", hint="check the --db URL, its permissions and free space"
            ) from e

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """One statement (``?`` markers), under the lock; the rows of a SELECT."""
        with self._lock:
            return self._run(sql, params)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Callable[[str, Sequence[Any]], list[Any]]]:
        """Statements that read and write together: the lock, BEGIN, COMMIT (ROLLBACK on error)."""
        with self._lock:
            self._run("BEGIN")
            try:
                yield self._run
            except BaseException:
                self._run("ROLLBACK")
                raise
            self._run("COMMIT")

    def _transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        self._run("BEGIN")
        try:
            for sql, params in statements:
                self._run(sql, params)
        except BaseException:
            self._run("ROLLBACK")
            raise
        self._run("COMMIT")

    def version(self) -> int:
        """The schema version of the database (0 for a new one)."""
        with self._lock:
            self._run("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            rows = self._run("SELECT MAX(version) FROM schema_version")
            return int(rows[0][0] or 0)

    def migrate(self) -> int:
        """Apply the missing schema steps, each in its own transaction; returns the version.

        Raises:
            DatabaseError: the database is newer than this server, or a step failed.
        """
        current = self.version()
        if current > SCHEMA_VERSION:
            raise DatabaseError(
                f"the database is at schema version {current}, this server knows {SCHEMA_VERSION}",
                hint="run the newer suture server that wrote it",
            )
        with self._lock:
            for version in range(current + 1, SCHEMA_VERSION + 1):
                steps: list[tuple[str, Sequence[Any]]] = [(q, ()) for q in MIGRATIONS[version - 1]]
                steps.append(("INSERT INTO schema_version (version) VALUES (?)", (version,)))
                self._transaction(steps)
        return SCHEMA_VERSION

    def record(self, checkin: Checkin, address: str, now: datetime | None = None) -> None:
        """Store a check-in as the host's last report (first_seen is kept).

        A change of kernel, level, attempted level or state is also appended
        to the host's history (``host_events``).
        """
        stamp = _stamp(now)
        c = checkin
        sql = (
            "INSERT INTO hosts (host_id, hostname, kernel_release, kernel_build_id, level, state,"
            " last_error, agent_version, patches, address, first_seen, last_seen, channel, uptime,"
            " functions, attempted_level)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (host_id) DO UPDATE SET hostname = excluded.hostname,"
            " kernel_release = excluded.kernel_release,"
            " kernel_build_id = excluded.kernel_build_id, level = excluded.level,"
            " state = excluded.state, last_error = excluded.last_error,"
            " agent_version = excluded.agent_version, patches = excluded.patches,"
            " address = excluded.address, last_seen = excluded.last_seen,"
            " channel = excluded.channel, uptime = excluded.uptime,"
            " functions = excluded.functions, attempted_level = excluded.attempted_level"
        )
        params = (
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
            stamp,
            stamp,
            c.channel,
            c.uptime,
            json.dumps(list(c.functions)),
            c.attempted_level,
        )
        event = (c.release, c.build_id, c.level, c.attempted_level, c.state)
        with self.transaction() as run:
            before = run(
                "SELECT kernel_release, kernel_build_id, level, attempted_level, state"
                " FROM hosts WHERE host_id = ?",
                (c.host_id,),
            )
            run(sql, params)
            if not before or tuple(before[0]) != event:
                run(
                    "INSERT INTO host_events (host_id, at, kernel_release, kernel_build_id,"
                    " level, attempted_level, state, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (c.host_id, stamp, *event[:4], c.state, c.last_error),
                )

    def hosts(self, where: str = "", params: Sequence[Any] = ()) -> list[HostRecord]:
        """Hosts with their last report, by host id; ``where`` filters (SQL on ``h.``/``r.``)."""
        # `where` is this package's own SQL; values always go in params.
        sql = (
            f"SELECT {HOST_COLUMNS} FROM hosts h LEFT JOIN registrations r"  # noqa: S608
            f" ON r.host_id = h.host_id {'WHERE ' + where if where else ''} ORDER BY h.host_id"
        )
        rows = self.execute(sql, params)
        return [host_record(r) for r in rows]

    def ping(self) -> None:
        """Raise :class:`DatabaseError` unless the database answers."""
        with self._lock:
            self._run("SELECT 1")

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


def open_store(url: DbUrl) -> Store:
    """Connect to the database and bring its schema up to date.

    Raises:
        DatabaseError: it cannot be opened or migrated.
        UsageError: a PostgreSQL URL without psycopg installed.
    """
    store = _connect_postgresql(url.target) if url.kind == "postgresql" else _connect_sqlite(url)
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    return store


def _connect_sqlite(url: DbUrl) -> Store:
    path = Path(url.target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; Store issues BEGIN/COMMIT itself.
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL is still crash-safe; a power cut may lose the last
        # check-ins, which agents send again next cycle. FULL costs an fsync
        # per check-in under the store's lock.
        conn.execute("PRAGMA synchronous=NORMAL")
    except (OSError, sqlite3.Error) as e:
        raise DatabaseError(f"cannot open the database {path}: {e}") from e
    return Store(conn, marker="?", errors=(sqlite3.Error,))


def _connect_postgresql(dsn: str) -> Store:
    try:
        import psycopg  # noqa: PLC0415  (only servers that use PostgreSQL need it)
    except ImportError as e:
        raise UsageError(
            "a postgresql:// database needs psycopg",
            hint="pip install 'suture[server-postgres]' (psycopg 3)",
        ) from e
    try:
        conn = psycopg.connect(dsn, autocommit=True)
    except psycopg.Error as e:
        raise DatabaseError(f"cannot connect to {DbUrl('postgresql', dsn)}: {e}") from e
    return Store(conn, marker="%s", errors=(psycopg.Error,))
