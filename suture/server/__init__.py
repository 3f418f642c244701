"""The patch server: the repository's static files, agents' check-ins, the fleet API, a dashboard.

Public API: :func:`open_server` (one server process, for tests and the
command line), :func:`serve` (what ``suture serve`` runs: one or several
processes until a signal), :class:`~suture.server.http.serve.Server` and
:class:`~suture.server.config.ServerConfig`. The agent never imports this
package (it speaks HTTP to it); the command line imports it lazily.

The package reads in three parts (docs/adr/0015-server-stack.md):

- ``http/``: the HTTP side (uvicorn, Starlette routes, pydantic models, the
  generated OpenAPI document, connection limits);
- ``fleet/``: the fleet's logic (enrolment, check-ins, rollouts, the level
  catalog, queries, OpenVEX, sessions, rate limits, metrics), on
- ``db/``: the store (SQLite or PostgreSQL; the only place with SQL);
- ``dashboard/``: the web pages (Jinja2 templates).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from suture.errors import NotARepoError
from suture.repo.layout import Layout
from suture.server.config import DEFAULT_LISTEN, ServerConfig
from suture.server.db import DbUrl, default_url, open_store
from suture.server.fleet import vex
from suture.server.fleet.catalog import Catalog
from suture.server.fleet.context import Clock, Fleet
from suture.server.http.serve import Server, bind, raise_file_limit, run
from suture.server.http.workers import supervise
from suture.server.log import ServerLog

__all__ = [
    "DEFAULT_LISTEN",
    "DbUrl",
    "Server",
    "ServerConfig",
    "default_url",
    "open_server",
    "run",
    "serve",
]


def _layout(repo: Path) -> Layout:
    layout = Layout(repo)
    if not layout.metadata.is_dir():
        raise NotARepoError(
            f"{repo} is not a repository: it has no metadata/ folder",
            hint="give the folder made by 'suture repo init'",
        )
    return layout


def _key_beside(url: DbUrl) -> Path:
    """The signing key's default place: the server's state, beside its database."""
    folder = Path(url.target if url.kind == "sqlite" else default_url().target).parent
    return folder / vex.KEY_NAME


def open_fleet(
    config: ServerConfig,
    *,
    log: ServerLog,
    admin_token: str | None,
    clock: Clock = time.time,
) -> Fleet:
    """The fleet's state for one server process: the database (migrated), catalog, VEX key.

    Raises:
        NotARepoError: the repository has no ``metadata/`` folder.
        UsageError: the database URL is malformed.
        DatabaseError: the database cannot be opened or migrated.
        ServerError: the signing key cannot be read or made.
    """
    layout = _layout(config.repo)
    url = DbUrl.parse(config.db) if config.db else default_url()
    store = open_store(url, pool_size=config.db_pool)
    try:
        vex_key = vex.load_or_create(config.signing_key_file or _key_beside(url))
    except BaseException:
        store.close()
        raise
    return Fleet(
        store=store,
        layout=layout,
        catalog=Catalog(layout),
        log=log,
        admin_token=admin_token,
        vex_key=vex_key,
        limits=config.limits,
        retention=config.retention,
        clock=clock,
        started_at=clock(),
    )


def open_server(
    repo: Path | None = None,
    *,
    listen: str = DEFAULT_LISTEN,
    db: str | None = None,
    log: Callable[[str], None] | None = None,
    admin_token: str | None = None,
    signing_key_file: Path | None = None,
    config: ServerConfig | None = None,
    clock: Clock = time.time,
) -> Server:
    """Open the database (migrating it) and bind the address, for the repository at ``repo``.

    Args:
        repo: a repository folder (from ``suture repo init``); only its
            ``metadata/`` and ``targets/`` are served.
        listen: ``HOST:PORT``; port 0 picks a free one (see :attr:`Server.url`).
        db: a ``sqlite:///path`` or ``postgresql://`` URL; None for :func:`default_url`.
        log: where the log's lines go; None for stderr.
        admin_token: the operators' bearer token for the fleet API; None: no admin access.
        signing_key_file: the Ed25519 key that signs OpenVEX documents (made, mode
            0600, when missing); None: ``vex-signing.key`` beside the SQLite
            database, or in the state folder for PostgreSQL.
        config: everything else (limits, TLS, logs); ``repo``, ``listen``, ``db`` and
            ``signing_key_file`` are taken from it when it is given.
        clock: unix time for the fleet's logic (tests move it).

    Raises:
        NotARepoError: ``repo`` has no ``metadata/`` folder.
        UsageError: ``listen`` or ``db`` is malformed.
        DatabaseError: the database cannot be opened or migrated.
        ServerError: the signing key cannot be read or made.
        ListenError: the address cannot be bound.
    """
    if config is None:
        if repo is None:
            raise TypeError("open_server needs repo or config")
        config = ServerConfig(
            repo=repo, listen=listen, db=db or "", signing_key_file=signing_key_file
        ).check()
    _layout(config.repo)
    sock = bind(config.listen)  # before the database: a taken port leaves no file behind
    try:
        server_log = ServerLog(log or _stderr, config.log_format, config.log_level, clock=clock)
        fleet = open_fleet(config, log=server_log, admin_token=admin_token, clock=clock)
        try:
            return Server(fleet, config, sock)
        except BaseException:
            fleet.store.close()
            raise
    except BaseException:
        sock.close()
        raise


def _stderr(line: str) -> None:
    import sys  # noqa: PLC0415

    print(line, file=sys.stderr, flush=True)


def serve(config: ServerConfig, *, admin_token: str | None, ready: Callable[[str], None]) -> int:
    """Serve until SIGTERM or SIGINT (``config.workers`` processes); the exit status.

    ``ready`` gets the URL once the server listens.
    """
    raise_file_limit()
    log = ServerLog(_stderr, config.log_format, config.log_level)
    if config.workers == 1:
        run(open_server(config=config, admin_token=admin_token), ready)
        return 0
    # Several processes: the parent migrates the database and makes the signing key once,
    # binds, and forks before it starts any thread; each child opens its own pool.
    open_fleet(config, log=log, admin_token=admin_token).store.close()
    sock = bind(config.listen)

    def child(n: int) -> int:
        fleet = open_fleet(config, log=log, admin_token=admin_token)
        run(Server(fleet, config, sock), lambda url: log.info("worker serving", worker=n))
        return 0

    host, port = sock.getsockname()[:2]
    scheme = "https" if config.tls else "http"
    ready(f"{scheme}://[{host}]:{port}" if ":" in str(host) else f"{scheme}://{host}:{port}")
    return supervise(config.workers, child, log)
