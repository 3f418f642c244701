"""The dashboard's logins: random session ids kept in the server's memory, never on disk.

A session is made when an operator gives the admin token on the login page;
the browser holds only its id (an HttpOnly cookie). Each session has its own
CSRF token for the dashboard's forms. Sessions end after :data:`LIFETIME`
(from login, not from last use: a stolen cookie is good for hours at most),
on logout, or when the server restarts.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

LIFETIME = 12 * 3600.0  # s from login
MAX_SESSIONS = 1000  # logins held at once; the oldest go first beyond it


@dataclass
class Session:
    """One operator's login: its CSRF token, when it ends, a message for the next page."""

    csrf: str
    expires: float  # unix time, s
    flash: str = ""  # shown once, on the next page (after a redirect)


def _key(session_id: str) -> str:
    # Kept by digest: a memory dump or a debugger's view of the dict shows no usable cookie.
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    """The live sessions, safe to share between the server's threads."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._live: dict[str, Session] = {}

    def create(self) -> tuple[str, Session]:
        """A new session: its id (for the cookie, not kept) and the session."""
        session_id = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), expires=self._clock() + LIFETIME)
        with self._lock:
            self._expire()
            while len(self._live) >= MAX_SESSIONS:
                del self._live[next(iter(self._live))]  # dicts keep insertion order: the oldest
            self._live[_key(session_id)] = session
        return session_id, session

    def get(self, session_id: str) -> Session | None:
        """The live session with this id, or None (unknown, ended or expired)."""
        if not session_id:
            return None
        with self._lock:
            session = self._live.get(_key(session_id))
            if session is not None and session.expires <= self._clock():
                del self._live[_key(session_id)]
                return None
            return session

    def end(self, session_id: str) -> None:
        """Log out: forget the session."""
        with self._lock:
            self._live.pop(_key(session_id), None)

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._live.items() if s.expires <= now]:
            del self._live[key]
