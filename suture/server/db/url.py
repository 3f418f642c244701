"""Which database a server uses: a ``sqlite:`` or ``postgresql://`` URL, and the default."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from suture.errors import UsageError

STATE_ENV = "SUTURE_STATE_DIR"


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
