"""The server's database: the store (connections, schema, writes) and the fleet's queries.

SQL lives in this package only. :func:`open_store` connects and brings the
schema up to date; the modules beside it hold the statements, one module per
table family: ``hosts`` (check-ins, history), ``enrolment`` (keys, tokens),
``rollouts`` (policies), ``sessions``, ``limits`` (rate limits),
``instances`` (per-process metrics, maintenance turns) and ``queries`` (the
fleet's read queries).
"""

from __future__ import annotations

from suture.server.db.pool import BUSY_TIMEOUT, POOL_SIZE, Store, Tx, connect
from suture.server.db.schema import SCHEMA_VERSION, migrate
from suture.server.db.url import DbUrl, default_url

__all__ = ["SCHEMA_VERSION", "DbUrl", "Store", "Tx", "default_url", "open_store"]


def open_store(
    url: DbUrl, *, pool_size: int = POOL_SIZE, busy_timeout: float = BUSY_TIMEOUT
) -> Store:
    """Connect to the database and bring its schema up to date.

    Raises:
        DatabaseError: it cannot be opened or migrated.
        UsageError: a PostgreSQL URL without psycopg installed.
    """
    store = connect(url, pool_size, busy_timeout)
    try:
        migrate(store)
    except BaseException:
        store.close()
        raise
    return store
