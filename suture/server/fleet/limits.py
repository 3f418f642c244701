"""Rate limits on failures: wrong logins, wrong admin tokens, refused enrolments, per address.

Counted in the database (:mod:`suture.server.db.limits`), so an address
refused by one server process is refused by all of them. Only failures
count: a fleet behind one NAT address enrols and reports as fast as it
likes with good credentials. Once an address has failed
``Limits.login_failures`` (logins) or ``Limits.auth_failures`` (admin token,
enrolment) times in ``Limits.failure_window`` seconds, its requests of that
kind are answered 429 until the window ends, good credentials or not: a
guesser learns nothing more in that time.
"""

from __future__ import annotations

from suture.errors import RateLimitedError
from suture.server.db import limits as counters
from suture.server.fleet.context import Fleet

LOGIN = "login"
ADMIN = "admin"
ENROL = "enrol"


def _limit(fleet: Fleet, scope: str) -> int:
    return fleet.limits.login_failures if scope == LOGIN else fleet.limits.auth_failures


def check(fleet: Fleet, scope: str, address: str) -> None:
    """Pass, or refuse an address that failed too often lately.

    Raises:
        RateLimitedError: with the seconds until the window ends.
    """
    n, left = counters.hits(fleet.store, scope, address, fleet.now(), fleet.limits.failure_window)
    if n >= _limit(fleet, scope):
        raise RateLimitedError(
            f"too many failed attempts from {address}; try again in {int(left) + 1} s",
            retry_after=left,
        )


def failed(fleet: Fleet, scope: str, address: str) -> None:
    """Count a failure of ``address``."""
    n = counters.hit(fleet.store, scope, address, fleet.now(), fleet.limits.failure_window)
    if n == _limit(fleet, scope):
        fleet.log.warning("too many failures: address refused", scope=scope, address=address)
