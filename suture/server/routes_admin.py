"""What operators call (admin token): hosts, levels, rollout control, registration keys."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from suture import timefmt
from suture.errors import UsageError
from suture.repo.layout import CHANNELS
from suture.server import fleetdb, queries, rollout
from suture.server.api import Context, Reply, Request, refuse, route


def _channel(params: dict[str, str]) -> str:
    channel = params["channel"]
    if channel not in CHANNELS:
        raise refuse(HTTPStatus.NOT_FOUND, "not_found", f"no channel {channel[:40]!r}")
    return channel


# GET /api/v1/hosts (with its filters) is in routes_query.


@route("GET", "/api/v1/hosts/{host_id}", "admin")
def host(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """One host: its last report and its history."""
    found = ctx.store.hosts("h.host_id = ?", (params["host_id"],))
    if not found:
        raise refuse(HTTPStatus.NOT_FOUND, "not_found", "no such host")
    history = fleetdb.events(ctx.store, params["host_id"])
    cutoff = queries.stamp(ctx.clock() - queries.INACTIVE_AFTER)
    host = queries.host_dict(found[0], cutoff)
    return Reply(data={"format": 1, "host": host, "history": history})


@route("GET", "/api/v1/levels", "admin")
def levels(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """Every live level of every kernel build and channel, from the signed metadata."""
    return Reply(data={"format": 1, "levels": [lv.to_dict() for lv in ctx.catalog.all()]})


# --- rollouts ---------------------------------------------------------------------


def _policy(ctx: Context, channel: str) -> rollout.Policy:
    return rollout.Policy.from_dict(fleetdb.policy(ctx.store, channel))


def _saved(ctx: Context, channel: str, policy: rollout.Policy, what: str) -> Reply:
    fleetdb.set_policy(ctx.store, channel, policy.to_dict())
    ctx.log(f"rollout on {channel}: {what}")
    return Reply(data={"format": 1, "ok": True, "channel": channel, "policy": policy.to_dict()})


@route("GET", "/api/v1/rollouts/{channel}", "admin")
def get_rollout(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """A channel's rollout policy."""
    channel = _channel(params)
    policy = _policy(ctx, channel).to_dict()
    return Reply(data={"format": 1, "channel": channel, "policy": policy})


@route("PUT", "/api/v1/rollouts/{channel}", "admin")
def put_rollout(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """Replace a channel's rollout policy (unknown settings and bad values are refused)."""
    channel = _channel(params)
    return _saved(ctx, channel, rollout.Policy.from_dict(req.json()), "policy replaced")


def _level(data: dict[str, Any]) -> int:
    value = data.get("level")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UsageError("level is not a level (an integer, 0 or more)")
    return value


@route("POST", "/api/v1/rollouts/{channel}/halt", "admin")
def halt(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """Stop a level from reaching more hosts (hosts on it stay on it unless unrolled)."""
    channel, data = _channel(params), req.json()
    level = _level(data)
    reason = str(data.get("reason") or "halted by an operator")
    now = timefmt.utc()
    policy = rollout.halted(_policy(ctx, channel), level, reason, now)
    return _saved(ctx, channel, policy, f"level {level} halted: {reason}")


@route("POST", "/api/v1/rollouts/{channel}/resume", "admin")
def resume(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """Lift a halt; that level is not halted again automatically (the operator decided)."""
    channel = _channel(params)
    current = _policy(ctx, channel)
    lifted = {
        "halted_level": None,
        "halt_reason": "",
        "halted_at": "",
        "resumed_level": current.halted_level,
    }
    policy = rollout.Policy.from_dict({**current.to_dict(), **lifted})
    return _saved(ctx, channel, policy, "halt lifted")


@route("POST", "/api/v1/rollouts/{channel}/promote", "admin")
def promote(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """Release a level to every host (staged rollouts)."""
    channel = _channel(params)
    level = _level(req.json())
    policy = rollout.Policy.from_dict({**_policy(ctx, channel).to_dict(), "promoted_level": level})
    return _saved(ctx, channel, policy, f"level {level} promoted to every host")


@route("POST", "/api/v1/rollouts/{channel}/unroll", "admin")
def unroll(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """Send every host back to an earlier level (``{"level": null}`` ends the unroll)."""
    channel = _channel(params)
    data = req.json()
    level = None if data.get("level") is None else _level(data)
    policy = rollout.Policy.from_dict({**_policy(ctx, channel).to_dict(), "unroll_to": level})
    what = f"hosts go back to level {level}" if level is not None else "unroll ended"
    return _saved(ctx, channel, policy, what)


# --- registration keys --------------------------------------------------------------


@route("POST", "/api/v1/registration-keys", "admin")
def create_key(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """A new registration key with tags for the hosts that enrol with it (shown once)."""
    data = req.json()
    tags, note = data.get("tags", []), data.get("note", "")
    if not (isinstance(tags, list) and all(isinstance(t, str) and 0 < len(t) <= 64 for t in tags)):
        raise UsageError("tags is not a list of tags (strings of 1 to 64 characters)")
    if not isinstance(note, str) or len(note) > 200:
        raise UsageError("note is not a string of at most 200 characters")
    key, secret = fleetdb.create_key(ctx.store, tuple(tags), note)
    return Reply(data={"format": 1, "ok": True, **key.to_dict(), "registration_key": secret})


@route("GET", "/api/v1/registration-keys", "admin")
def list_keys(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """The registration keys (never the secrets)."""
    return Reply(data={"format": 1, "keys": [k.to_dict() for k in fleetdb.keys(ctx.store)]})


@route("DELETE", "/api/v1/registration-keys/{key_id}", "admin")
def revoke_key(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """Revoke a key: no new host enrols with it; enrolled hosts keep their tokens."""
    if not fleetdb.revoke_key(ctx.store, params["key_id"]):
        raise refuse(HTTPStatus.NOT_FOUND, "not_found", "no such registration key")
    return Reply(data={"format": 1, "ok": True, "key_id": params["key_id"], "revoked": True})
