"""The dashboard's logins: random session ids, kept in the database (every process knows them).

A session is made when an operator gives the admin token on the login page;
the browser holds only its id (an HttpOnly cookie). Each session has its own
CSRF token for the dashboard's forms, and may carry one message for its next
page. Sessions end after :data:`LIFETIME` (from login, not from last use: a
stolen cookie is good for hours at most), or on logout.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from suture.server.db import sessions as db
from suture.server.fleet.context import Fleet

LIFETIME = 12 * 3600.0  # s from login
MAX_SESSIONS = 1000  # logins held at once; the oldest go first beyond it


@dataclass(frozen=True)
class Session:
    """One operator's login, as a page sees it."""

    key: str  # the stored digest of its id
    csrf: str
    flash: str = ""  # the message for this page (shown once)


def _key(session_id: str) -> str:
    # Stored by digest: a copy of the database holds no usable cookie.
    return hashlib.sha256(session_id.encode()).hexdigest()


def create(fleet: Fleet) -> str:
    """A new session; its id, for the cookie (not kept)."""
    session_id = secrets.token_urlsafe(32)
    now = fleet.now()
    db.create(
        fleet.store,
        _key(session_id),
        secrets.token_urlsafe(32),
        now=now,
        expires_at=now + LIFETIME,
        keep=MAX_SESSIONS,
    )
    return session_id


def get(fleet: Fleet, session_id: str) -> Session | None:
    """The live session with this id, its message taken; None when unknown, ended or expired."""
    if not session_id:
        return None
    key = _key(session_id)
    row = db.get(fleet.store, key, fleet.now())
    if row is None:
        return None
    if row.flash:
        db.set_flash(fleet.store, key, "")
    return Session(key, row.csrf, row.flash)


def flash(fleet: Fleet, session: Session, message: str) -> None:
    """Keep a message for the session's next page."""
    db.set_flash(fleet.store, session.key, message[:500])


def end(fleet: Fleet, session_id: str) -> None:
    """Log out: forget the session."""
    db.end(fleet.store, _key(session_id))
