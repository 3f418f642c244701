"""The patch server: serves a repository's static files and takes agents' check-ins.

Public API: :func:`open_server` and :class:`Server`. The agent never imports
this package (it talks HTTP to it); the command line imports it lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from suture.errors import NotARepoError
from suture.repo.layout import Layout
from suture.server import vex
from suture.server.httpd import DEFAULT_LISTEN, Server, parse_listen, run
from suture.server.store import DbUrl, default_url, open_store

__all__ = ["DEFAULT_LISTEN", "DbUrl", "Server", "default_url", "open_server", "run"]


def open_server(
    repo: Path,
    *,
    listen: str = DEFAULT_LISTEN,
    db: str | None = None,
    log: Callable[[str], None] | None = None,
    admin_token: str | None = None,
    signing_key_file: Path | None = None,
) -> Server:
    """Open the database (migrating it) and bind ``listen`` for the repository at ``repo``.

    Args:
        repo: a repository folder (from ``suture repo init``); only its
            ``metadata/`` and ``targets/`` are served.
        listen: ``HOST:PORT``; port 0 picks a free one (see :attr:`Server.url`).
        db: a ``sqlite:///path`` or ``postgresql://`` URL; None for :func:`default_url`.
        log: where request lines go; None for stderr.
        admin_token: the operators' bearer token for the fleet API; None: no admin access.
        signing_key_file: the Ed25519 key that signs OpenVEX documents (made, mode
            0600, when missing); None: ``vex-signing.key`` beside the SQLite
            database, or in the state folder for PostgreSQL.

    Raises:
        NotARepoError: ``repo`` has no ``metadata/`` folder.
        UsageError: ``listen`` or ``db`` is malformed.
        DatabaseError: the database cannot be opened or migrated.
        ServerError: the signing key cannot be read or made.
        ListenError: the address cannot be bound.
    """
    parse_listen(listen)  # before the database is opened, so a typo leaves no file behind
    layout = Layout(repo)
    if not layout.metadata.is_dir():
        raise NotARepoError(
            f"{repo} is not a repository: it has no metadata/ folder",
            hint="give the folder made by 'suture repo init'",
        )
    url = DbUrl.parse(db) if db else default_url()
    store = open_store(url)
    try:
        vex_key = vex.load_or_create(signing_key_file or _key_beside(url))
        if log is None:
            return Server(layout, store, listen, admin_token=admin_token, vex_key=vex_key)
        return Server(layout, store, listen, log, admin_token, vex_key=vex_key)
    except BaseException:
        store.close()
        raise


def _key_beside(url: DbUrl) -> Path:
    """The signing key's default place: the server's state, beside its database."""
    folder = Path(url.target if url.kind == "sqlite" else default_url().target).parent
    return folder / vex.KEY_NAME
