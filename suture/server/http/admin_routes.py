"""What operators call (admin token): hosts (delete, revoke), levels, rollouts, keys."""

from __future__ import annotations

from typing import Any

from suture.errors import RefusedError, UsageError
from suture.server.db import enrolment as keys_db
from suture.server.db import hosts
from suture.server.fleet import enrolment, paging, steering, views
from suture.server.fleet.rollout import Policy
from suture.server.http import models
from suture.server.http.routing import Auth, Call, Doc, Endpoint, ModelBody

HISTORY_PAGE = 50  # events shown with a host


def _events(call: Call, host_id: str, cursor: str | None, limit: int) -> tuple[list[Any], Any]:
    kind = f"events:{host_id}"
    before = paging.decode(kind, cursor) if cursor else None
    if before is not None and not isinstance(before, int):
        raise RefusedError("cursor is not one of this host's history", reason="not_found")
    found = hosts.events(call.fleet.store, host_id, before, limit + 1)
    more = len(found) > limit
    found = found[:limit]
    return found, paging.encode(kind, found[-1]["seq"]) if more else None


def host(call: Call) -> dict[str, Any]:
    """One host, its CVEs fixed in memory (in full, in part), the newest page of its history."""
    record = hosts.get(call.fleet.store, call.params["host_id"])
    if record is None:
        raise RefusedError("no such host", reason="not_found")
    history, more = _events(call, record.checkin.host_id, None, HISTORY_PAGE)
    since = views.cutoff(call.fleet.now(), views.INACTIVE_AFTER)
    memory = views.FixedCves(call.fleet.catalog).of_host(record)
    return {
        "format": 1,
        "host": views.host_dict(record, since),
        "cves_fixed": memory.fixed,
        "cves_partial": memory.partial,
        "history": history,
        "history_next_cursor": more,
    }


def host_events(call: Call) -> dict[str, Any]:
    """A page of a host's history, newest first."""
    q: models.EventsQuery = call.query
    host_id = call.params["host_id"]
    if hosts.get(call.fleet.store, host_id) is None:
        raise RefusedError("no such host", reason="not_found")
    found, more = _events(call, host_id, q.cursor, q.limit or paging.DEFAULT_LIMIT)
    return {"format": 1, "events": found, "next_cursor": more}


def delete_host(call: Call) -> dict[str, Any]:
    """Forget a host: its report, history and token (its id may enrol afresh)."""
    enrolment.delete_host(call.fleet, call.params["host_id"])
    return {"format": 1, "ok": True, "host_id": call.params["host_id"]}


def revoke_host(call: Call) -> dict[str, Any]:
    """Revoke a host's token; ``allow_reenrol``: its id may enrol again with a key."""
    body: models.HostRevoke = call.body
    enrolment.revoke_host(call.fleet, call.params["host_id"], allow_reenrol=body.allow_reenrol)
    return {"format": 1, "ok": True, "host_id": call.params["host_id"]}


def levels(call: Call) -> dict[str, Any]:
    """Every live level of every kernel build and channel, from the signed metadata."""
    return {"format": 1, "levels": [lv.to_dict() for lv in call.fleet.catalog.all()]}


# --- rollouts -----------------------------------------------------------------------------


def _rollout(channel: str, policy: Policy, *, done: bool = True) -> dict[str, Any]:
    answer = {"format": 1, "channel": channel, "policy": policy.to_dict()}
    return {**answer, "ok": True} if done else answer


def get_rollout(call: Call) -> dict[str, Any]:
    """A channel's rollout policy."""
    channel = call.params["channel"]
    return _rollout(channel, steering.policy(call.fleet, channel), done=False)


def put_rollout(call: Call) -> dict[str, Any]:
    """Replace a channel's rollout policy."""
    channel = call.params["channel"]
    body: models.Policy = call.body
    data = body.model_dump(exclude_unset=True)
    return _rollout(channel, steering.replace_policy(call.fleet, channel, data))


def _build(release: str | None, build_id: str | None) -> tuple[str, str] | None:
    if (release is None) != (build_id is None):
        raise UsageError("give both release and build_id, or neither")
    return None if release is None or build_id is None else (release, build_id)


def halt(call: Call) -> dict[str, Any]:
    """Stop a level from reaching more hosts (of every build, or of one)."""
    channel, body = call.params["channel"], call.body
    build = _build(body.release, body.build_id)
    policy = steering.halt(call.fleet, channel, body.level, body.reason, build=build)
    return _rollout(channel, policy)


def resume(call: Call) -> dict[str, Any]:
    """Lift the halts (every one, or one build's)."""
    channel, body = call.params["channel"], call.body
    policy = steering.resume(call.fleet, channel, build=_build(body.release, body.build_id))
    return _rollout(channel, policy)


def promote(call: Call) -> dict[str, Any]:
    """Release a level to every host (staged rollouts)."""
    channel = call.params["channel"]
    return _rollout(channel, steering.promote(call.fleet, channel, call.body.level))


def unroll(call: Call) -> dict[str, Any]:
    """Send every host back to an earlier level (``{"level": null}`` ends the unroll)."""
    channel = call.params["channel"]
    return _rollout(channel, steering.unroll(call.fleet, channel, call.body.level))


# --- registration keys -------------------------------------------------------------------


def create_key(call: Call) -> dict[str, Any]:
    """A new registration key (shown once), with tags, a host limit, an expiry."""
    body: models.KeyRequest = call.body
    expires = None if body.expires_at is None else models.unix_time(body.expires_at)
    key, secret = enrolment.create_key(
        call.fleet, tuple(body.tags), body.note, max_hosts=body.max_hosts, expires_at=expires
    )
    return {
        "format": 1,
        "ok": True,
        **key.to_dict(call.fleet.now()),
        "registration_key": secret,
    }


def list_keys(call: Call) -> dict[str, Any]:
    """The registration keys (never the secrets)."""
    now = call.fleet.now()
    return {"format": 1, "keys": [k.to_dict(now) for k in keys_db.keys(call.fleet.store)]}


def revoke_key(call: Call) -> dict[str, Any]:
    """Revoke a key (no more enrolments); ``revoke_hosts=true`` revokes its hosts' tokens too."""
    q: models.KeyRevokeQuery = call.query
    key_id = call.params["key_id"]
    revoked = enrolment.revoke_key(call.fleet, key_id, revoke_hosts=q.revoke_hosts)
    return {"format": 1, "ok": True, "key_id": key_id, "revoked": True, "hosts_revoked": revoked}


E = models.Error
NOT_FOUND = {404: E}
ROLLOUT = "/api/v1/rollouts/{channel}"
HOST = "/api/v1/hosts/{host_id}"

ENDPOINTS = [
    Endpoint(
        "GET",
        HOST,
        host,
        auth=Auth.ADMIN,
        doc=Doc(
            "one host and the newest page of its history", {200: models.HostAnswer, **NOT_FOUND}
        ),
    ),
    Endpoint(
        "DELETE",
        HOST,
        delete_host,
        auth=Auth.ADMIN,
        doc=Doc(
            "forget a host: its report, history and token (its id may enrol afresh)",
            {200: models.HostDone, **NOT_FOUND},
        ),
    ),
    Endpoint(
        "GET",
        HOST + "/events",
        host_events,
        auth=Auth.ADMIN,
        query=models.EventsQuery,
        doc=Doc(
            "a page of a host's history, newest first", {200: models.EventsAnswer, **NOT_FOUND}
        ),
    ),
    Endpoint(
        "POST",
        HOST + "/revoke",
        revoke_host,
        auth=Auth.ADMIN,
        body=ModelBody(models.HostRevoke, optional=True),
        doc=Doc(
            "revoke a host's token; its id enrols again only if allow_reenrol",
            {200: models.HostDone, **NOT_FOUND},
        ),
    ),
    Endpoint(
        "GET",
        "/api/v1/levels",
        levels,
        auth=Auth.ADMIN,
        doc=Doc(
            "every live level of every build and channel (signed metadata)",
            {200: models.LevelsAnswer},
        ),
    ),
    Endpoint(
        "GET",
        ROLLOUT,
        get_rollout,
        auth=Auth.ADMIN,
        doc=Doc("a channel's rollout policy", {200: models.PolicyAnswer, **NOT_FOUND}),
    ),
    Endpoint(
        "PUT",
        ROLLOUT,
        put_rollout,
        auth=Auth.ADMIN,
        body=ModelBody(models.Policy),
        doc=Doc("replace a channel's rollout policy", {200: models.PolicyDone, **NOT_FOUND}),
    ),
    Endpoint(
        "POST",
        ROLLOUT + "/halt",
        halt,
        auth=Auth.ADMIN,
        body=ModelBody(models.Halt),
        doc=Doc(
            "stop a level from reaching more hosts: of every build, or of one build",
            {200: models.PolicyDone, **NOT_FOUND},
        ),
    ),
    Endpoint(
        "POST",
        ROLLOUT + "/resume",
        resume,
        auth=Auth.ADMIN,
        body=ModelBody(models.Resume, optional=True),
        doc=Doc(
            "lift the halts (every one, or one build's)",
            {200: models.PolicyDone, **NOT_FOUND},
        ),
    ),
    Endpoint(
        "POST",
        ROLLOUT + "/promote",
        promote,
        auth=Auth.ADMIN,
        body=ModelBody(models.LevelBody),
        doc=Doc(
            "release levels up to this one to every host", {200: models.PolicyDone, **NOT_FOUND}
        ),
    ),
    Endpoint(
        "POST",
        ROLLOUT + "/unroll",
        unroll,
        auth=Auth.ADMIN,
        body=ModelBody(models.Unroll),
        doc=Doc(
            "send every host back to a level (null ends the unroll)",
            {200: models.PolicyDone, **NOT_FOUND},
        ),
    ),
    Endpoint(
        "GET",
        "/api/v1/registration-keys",
        list_keys,
        auth=Auth.ADMIN,
        doc=Doc("the registration keys (never the secrets)", {200: models.KeysAnswer}),
    ),
    Endpoint(
        "POST",
        "/api/v1/registration-keys",
        create_key,
        auth=Auth.ADMIN,
        body=ModelBody(models.KeyRequest, optional=True),
        doc=Doc(
            "a new registration key (the secret is shown once): tags, host limit, expiry",
            {200: models.NewKey},
        ),
    ),
    Endpoint(
        "DELETE",
        "/api/v1/registration-keys/{key_id}",
        revoke_key,
        auth=Auth.ADMIN,
        query=models.KeyRevokeQuery,
        doc=Doc(
            "revoke a key; revoke_hosts=true revokes the tokens of its hosts too",
            {200: models.KeyRevoked, **NOT_FOUND},
        ),
    ),
]
