"""Connections to the server's database, shared by its threads and by other server processes.

SQLite (standard library) by default, PostgreSQL (psycopg 3 and its pool) by
URL. SQL is written once, with ``?`` markers; :class:`Tx` turns them into
``%s`` for psycopg. Each unit of work borrows a connection from a pool:
:meth:`Store.read` for single statements (each its own snapshot),
:meth:`Store.write` for a transaction.

How two processes (or two hosts) on one database stay right:

- SQLite: WAL, and a write transaction begins ``IMMEDIATE``: it takes the
  write lock at once and waits for it (the busy timeout) instead of failing.
  A deferred ``BEGIN`` that read first and then wrote failed at once with
  "database is locked" when another process held the lock.
- PostgreSQL: READ COMMITTED; a transaction locks the rows it is going to
  change with ``SELECT ... FOR UPDATE`` (:attr:`Tx.lock`), so two processes
  deciding from the same row take turns.

On PostgreSQL a transaction runs in pipeline mode: statements whose answer
is not needed at once (:meth:`Tx.send`) and reads started together
(:meth:`Tx.start`) go in one round trip. A check-in is two round trips
(BEGIN and its reads; its writes and COMMIT), not seven.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from suture.errors import DatabaseError, UsageError
from suture.server.db.url import DbUrl

POOL_SIZE = 8  # connections per server process
BUSY_TIMEOUT = 10.0  # s a SQLite writer waits for another one
CONNECT_TIMEOUT = 10  # s to reach PostgreSQL
Row = tuple[Any, ...]


class _Cursor(Protocol):
    @property
    def description(self) -> Any: ...

    @property
    def rowcount(self) -> int: ...

    def fetchall(self) -> list[Any]: ...


class _Connection(Protocol):
    def execute(self, sql: Any, params: Sequence[Any] = ..., /) -> Any: ...


class Tx:
    """One borrowed connection: statements with ``?`` markers, and the rows they give."""

    def __init__(
        self,
        conn: _Connection,
        dialect: str,
        errors: tuple[type[Exception], ...],
        pipeline: Any = None,
    ) -> None:
        self._conn = conn
        self.dialect = dialect
        self._errors = errors
        self._pipeline = pipeline  # psycopg's, in a PostgreSQL transaction

    @property
    def lock(self) -> str:
        """What a SELECT adds to lock the rows it reads until the transaction ends.

        Nothing on SQLite, where a write transaction holds the whole database.
        """
        return " FOR UPDATE" if self.dialect == "postgresql" else ""

    def locked(self, select: str) -> str:
        """``select`` with :attr:`lock` after it."""
        return select + self.lock

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement; its rows (a SELECT, or RETURNING), else []."""
        return self.start(sql, params)()

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """Run one statement; its first row, or None."""
        found = self.rows(sql, params)
        return found[0] if found else None

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; how many rows it changed."""
        cursor = self._execute(sql, params)
        if self._pipeline is not None:
            self._sync()  # the count comes with the answer
        return int(cursor.rowcount)

    def send(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run a statement whose answer is not needed now (errors show by the commit at most)."""
        self._execute(sql, params)

    def start(self, sql: str, params: Sequence[Any] = ()) -> Callable[[], list[Row]]:
        """Start a query; call the result for its rows (reads started together share a trip)."""
        cursor = self._execute(sql, params)

        def rows() -> list[Row]:
            try:
                if cursor.description is None and self._pipeline is not None:
                    self._pipeline.sync()  # its answer (and those of the others sent) arrives
                return [tuple(r) for r in cursor.fetchall()] if cursor.description else []
            except self._errors as e:
                raise _database_error(e) from e

        if self._pipeline is not None:
            return rows
        found = rows()  # without a pipeline the answer is here already: read it now
        return lambda: found

    def _sync(self) -> None:
        try:
            self._pipeline.sync()
        except self._errors as e:
            raise _database_error(e) from e

    def _execute(self, sql: str, params: Sequence[Any]) -> _Cursor:
        if self.dialect == "postgresql":
            sql = _pg_sql(sql)
        try:
            cursor: _Cursor = self._conn.execute(sql, params)
        except self._errors as e:
            raise _database_error(e) from e
        return cursor


_PG_SQL: dict[str, str] = {}


def _pg_sql(sql: str) -> str:
    # Our SQL has no "?" or "%" of its own: values always go in params.
    if (found := _PG_SQL.get(sql)) is None:
        found = _PG_SQL[sql] = sql.replace("?", "%s")
    return found


def _database_error(e: Exception) -> DatabaseError:
    return DatabaseError(
        f"database: {e}", hint="check the --db URL, its permissions and free space"
    )


class Store:
    """The server's database: a pool of connections, safe to share between threads."""

    def __init__(self, url: DbUrl, pool: _SqlitePool | _PgPool) -> None:
        self.url = url
        self.dialect = url.kind
        self._pool = pool

    @contextlib.contextmanager
    def read(self) -> Iterator[Tx]:
        """A connection for statements that each stand alone (no transaction)."""
        with self._pool.connection() as tx:
            yield tx

    @contextlib.contextmanager
    def write(self) -> Iterator[Tx]:
        """A transaction: committed when the block ends, rolled back when it raises."""
        with self._pool.transaction() as tx:
            yield tx

    def ping(self) -> None:
        """Raise :class:`DatabaseError` unless the database answers."""
        with self.read() as tx:
            tx.rows("SELECT 1")

    def close(self) -> None:
        """Close every connection."""
        self._pool.close()


# --- SQLite -------------------------------------------------------------------------------


class _SqlitePool:
    """At most ``size`` connections to one SQLite file, reused (last returned, first lent)."""

    def __init__(self, path: Path, size: int, busy_timeout: float) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._idle: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        try:
            # isolation_level=None: autocommit; transactions are begun explicitly.
            conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL is still crash-safe (a process killed mid-write loses
            # nothing committed); a power cut may lose the last check-ins, which agents
            # send again next cycle. FULL costs an fsync per check-in.
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as e:
            raise DatabaseError(f"cannot open the database {self._path}: {e}") from e
        with self._lock:
            self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def _borrow(self) -> Iterator[sqlite3.Connection]:
        if not self._slots.acquire(timeout=60):
            raise DatabaseError("no database connection came free in 60 s")
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._connect()
            try:
                yield conn
            finally:
                if conn.in_transaction:  # a failed statement left one open
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                self._idle.put(conn)
        finally:
            self._slots.release()

    @contextlib.contextmanager
    def connection(self) -> Iterator[Tx]:
        with self._borrow() as conn:
            yield Tx(conn, "sqlite", (sqlite3.Error,))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._borrow() as conn:
            tx = Tx(conn, "sqlite", (sqlite3.Error,))
            tx.run("BEGIN IMMEDIATE")
            try:
                yield tx
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            tx.run("COMMIT")

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()


def _private_file(path: Path) -> None:
    """Make the database file (and its WAL files) readable by the server's user only."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            with contextlib.suppress(FileNotFoundError):
                if stat.S_IMODE(name.stat().st_mode) & 0o077:
                    name.chmod(0o600)
    except OSError as e:
        raise DatabaseError(f"cannot open the database {path}: {e.strerror or e}") from e


# --- PostgreSQL ---------------------------------------------------------------------------


class _PgPool:
    """psycopg's connection pool, in autocommit mode (transactions are explicit)."""

    def __init__(self, dsn: str, size: int) -> None:
        try:
            import psycopg  # noqa: PLC0415  (only servers that use PostgreSQL need it)
            import psycopg_pool  # noqa: PLC0415
        except ImportError as e:
            raise UsageError(
                "a postgresql:// database needs psycopg and psycopg_pool",
                hint="pip install 'suture[server]'",
            ) from e
        self._errors: tuple[type[Exception], ...] = (psycopg.Error, psycopg_pool.PoolTimeout)
        shown = DbUrl("postgresql", dsn)
        try:  # once, to fail now with the reason rather than after the pool's retries
            psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT).close()
        except psycopg.Error as e:
            raise DatabaseError(f"cannot connect to {shown}: {e}") from e
        self._pool = psycopg_pool.ConnectionPool(
            dsn,
            min_size=1,
            max_size=size,
            kwargs={"autocommit": True},
            open=False,
            timeout=60,
            name="suture",
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except psycopg_pool.PoolTimeout as e:
            raise DatabaseError(f"cannot connect to {shown}: {e}") from e

    @contextlib.contextmanager
    def connection(self) -> Iterator[Tx]:
        try:
            with self._pool.connection() as conn:
                yield Tx(conn, "postgresql", self._errors)
        except self._errors as e:
            raise _database_error(e) from e

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        try:
            with self._pool.connection() as conn, conn.pipeline() as p, conn.transaction():
                yield Tx(conn, "postgresql", self._errors, pipeline=p)
        except self._errors as e:
            raise _database_error(e) from e

    def close(self) -> None:
        self._pool.close()


def connect(url: DbUrl, size: int = POOL_SIZE, busy_timeout: float = BUSY_TIMEOUT) -> Store:
    """A store on ``url`` (not migrated: see :func:`suture.server.db.schema.migrate`).

    Raises:
        DatabaseError: it cannot be opened or reached.
        UsageError: a PostgreSQL URL without psycopg installed.
    """
    if url.kind == "postgresql":
        return Store(url, _PgPool(url.target, size))
    path = Path(url.target)
    _private_file(path)
    store = Store(url, _SqlitePool(path, size, busy_timeout))
    store.ping()
    return store
