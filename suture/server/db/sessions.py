"""Dashboard sessions, kept in the database so that every server process knows them.

A session is stored by the sha256 of its id (the cookie), so a copy of the
database holds no usable cookie.
"""

from __future__ import annotations

from dataclasses import dataclass

from suture.server.db.pool import Store


@dataclass(frozen=True)
class SessionRow:
    """One login: its CSRF token, when it ends, a message for its next page."""

    csrf: str
    expires_at: float  # unix time
    flash: str


def create(
    store: Store, id_hash: str, csrf: str, *, now: float, expires_at: float, keep: int
) -> None:
    """Store a new session; expired ones go, and the oldest beyond ``keep`` sessions."""
    with store.write() as tx:
        tx.run("DELETE FROM sessions WHERE expires_at <= ?", (now,))
        tx.run(
            "DELETE FROM sessions WHERE id_hash IN (SELECT id_hash FROM sessions"
            " ORDER BY created_at DESC LIMIT -1 OFFSET ?)"
            if tx.dialect == "sqlite"
            else "DELETE FROM sessions WHERE id_hash IN (SELECT id_hash FROM sessions"
            " ORDER BY created_at DESC OFFSET ?)",
            (keep - 1,),
        )
        tx.run(
            "INSERT INTO sessions (id_hash, csrf, created_at, expires_at) VALUES (?, ?, ?, ?)",
            (id_hash, csrf, now, expires_at),
        )


def get(store: Store, id_hash: str, now: float) -> SessionRow | None:
    """The live session, or None (unknown, ended or expired)."""
    with store.read() as tx:
        row = tx.one(
            "SELECT csrf, expires_at, flash FROM sessions WHERE id_hash = ? AND expires_at > ?",
            (id_hash, now),
        )
    return SessionRow(row[0], float(row[1]), row[2]) if row else None


def set_flash(store: Store, id_hash: str, flash: str) -> None:
    """Keep a message for the session's next page ("" clears it)."""
    with store.read() as tx:
        tx.run("UPDATE sessions SET flash = ? WHERE id_hash = ?", (flash, id_hash))


def end(store: Store, id_hash: str) -> None:
    """Forget a session."""
    with store.read() as tx:
        tx.run("DELETE FROM sessions WHERE id_hash = ?", (id_hash,))
