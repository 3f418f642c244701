"""Enrolment and the lifecycle of keys and hosts: who may report, and how that is taken back.

A registration key (``srk_...``, made by an operator, with tags, an optional
limit of hosts and an expiry) lets a host enrol once: the host gets its own
token (``sht_...``), and its host id is its own from then on. Enrolling that
id again takes the host's current token (a token rotation) or an operator's
action: revoking the token with ``allow_reenrol`` (a reinstalled host), or
deleting the host. Keys and tokens are 256-bit random values, stored only
as their sha256.
"""

from __future__ import annotations

import hashlib
import secrets

from suture.contract.enrolment import HOST_TOKEN_PREFIX, KEY_PREFIX
from suture.errors import RefusedError
from suture.server.db import enrolment as db
from suture.server.db import hosts
from suture.server.db.enrolment import Enrolment, KeyRecord
from suture.server.fleet import limits
from suture.server.fleet.context import Fleet

_WHY = {
    Enrolment.BAD_KEY: "unknown or revoked registration key",
    Enrolment.KEY_EXPIRED: "the registration key has expired",
    Enrolment.KEY_FULL: "the registration key has enrolled as many hosts as it may",
    Enrolment.TAKEN: (
        "host id {host} is enrolled already: enrolling it again takes its current token, "
        "or an operator revoking it with allow_reenrol (a reinstalled host)"
    ),
    Enrolment.BLOCKED: (
        "the token of host id {host} was revoked: an operator must allow it to enrol "
        "again, or delete the host"
    ),
}


def digest(secret: str) -> str:
    """What is stored of a token or key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def enrol(fleet: Fleet, key: str, host_id: str, *, shown_token: str = "", address: str) -> str:
    """Enrol ``host_id`` with a registration key; the host's new token (shown once).

    Raises:
        RateLimitedError: the address failed too often lately.
        RefusedError: the key or the host id does not allow it (``reason``: the
            :class:`~suture.server.db.enrolment.Enrolment` value).
    """
    limits.check(fleet, limits.ENROL, address)
    token = HOST_TOKEN_PREFIX + secrets.token_urlsafe(32)
    shown = digest(shown_token) if shown_token else ""
    outcome = db.enrol(
        fleet.store, digest(key), host_id, digest(token), fleet.now(), shown_hash=shown
    )
    if outcome.taken:
        fleet.log.info("host enrolled", host_id=host_id, how=outcome.value, address=address)
        return token
    limits.failed(fleet, limits.ENROL, address)
    fleet.log.warning("enrolment refused", host_id=host_id, why=outcome.value, address=address)
    raise RefusedError(_WHY[outcome].format(host=host_id), reason=outcome.value)


def host_for_token(fleet: Fleet, token: str) -> tuple[str, tuple[str, ...]] | None:
    """The host id and tags a live host token speaks for, or None."""
    if not token.startswith(HOST_TOKEN_PREFIX):
        return None
    return db.host_for_token(fleet.store, digest(token))


def create_key(
    fleet: Fleet,
    tags: tuple[str, ...],
    note: str = "",
    *,
    max_hosts: int | None = None,
    expires_at: float | None = None,
) -> tuple[KeyRecord, str]:
    """A new registration key; its secret is returned once and stored only hashed."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = db.create_key(
        fleet.store,
        key_id=secrets.token_hex(6),
        key_hash=digest(secret),
        tags=tags,
        note=note,
        now=fleet.now(),
        max_hosts=max_hosts,
        expires_at=expires_at,
    )
    fleet.log.info("registration key created", key_id=key.key_id)
    return key, secret


def revoke_key(fleet: Fleet, key_id: str, *, revoke_hosts: bool) -> int:
    """Revoke a key, and with ``revoke_hosts`` the tokens of its hosts; how many hosts.

    Raises:
        RefusedError: no such key (``not_found``).
    """
    revoked = db.revoke_key(fleet.store, key_id, revoke_hosts=revoke_hosts)
    if revoked is None:
        raise RefusedError("no such registration key", reason="not_found")
    fleet.log.info("registration key revoked", key_id=key_id, hosts_revoked=revoked)
    return revoked


def revoke_host(fleet: Fleet, host_id: str, *, allow_reenrol: bool) -> None:
    """Revoke a host's token (it may enrol again only with ``allow_reenrol``).

    Raises:
        RefusedError: the host never enrolled (``not_found``).
    """
    if not db.revoke_host(fleet.store, host_id, allow_reenrol=allow_reenrol):
        raise RefusedError(f"host {host_id} is not enrolled", reason="not_found")
    fleet.log.info("host token revoked", host_id=host_id, allow_reenrol=allow_reenrol)


def delete_host(fleet: Fleet, host_id: str) -> None:
    """Forget a host: its report, history and token (its id may enrol afresh).

    Raises:
        RefusedError: no such host (``not_found``).
    """
    if not hosts.delete(fleet.store, host_id):
        raise RefusedError(f"no host {host_id}", reason="not_found")
    fleet.log.info("host deleted", host_id=host_id)
