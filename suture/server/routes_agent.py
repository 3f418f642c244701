"""What agents call: enrolment with a registration key, and the check-in with its directive."""

from __future__ import annotations

from http import HTTPStatus

from suture import timefmt
from suture.errors import UsageError
from suture.server import checkin, fleetdb, rollout
from suture.server.api import Context, Reply, Request, refuse, route


@route("POST", "/api/v1/register", "public")
def register(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """Enrol a host: a registration key in, the host's own token out (shown once)."""
    data = req.json()
    key, host_id = data.get("registration_key"), data.get("host_id")
    if not isinstance(key, str) or not key:
        raise UsageError("registration_key is missing")
    if not isinstance(host_id, str) or not checkin.HOST_ID.fullmatch(host_id):
        raise UsageError("host_id is missing or not well formed")
    token = fleetdb.register(ctx.store, key, host_id)
    if token is None:
        raise refuse(HTTPStatus.FORBIDDEN, "forbidden", "unknown or revoked registration key")
    ctx.log(f"registered {host_id}")
    return Reply(data={"format": 1, "ok": True, "host_id": host_id, "host_token": token})


@route("POST", "/api/v1/checkin", "host")
def take_checkin(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """Store a host's report; answer with the highest level it may run (the rollout)."""
    if len(req.body) > checkin.MAX_BODY:
        raise refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large", "the check-in is too big")
    req.json()  # the media type and the JSON itself, before the fields
    report = checkin.parse(req.body)
    if report.host_id != req.host_id:
        raise refuse(
            HTTPStatus.FORBIDDEN,
            "forbidden",
            f"this token belongs to {req.host_id}; a host reports only about itself",
        )
    ctx.store.record(report, req.address)
    policy = rollout.Policy.from_dict(fleetdb.policy(ctx.store, report.channel))
    if report.state == "failed" and report.attempted_level > report.level:
        policy = _maybe_halt(ctx, policy, report.channel, report.attempted_level)
    levels = ctx.catalog.levels(report.release, report.build_id, report.channel)
    cap = rollout.allowed_level(policy, levels, report.host_id, req.tags, ctx.clock())
    directive = {"max_level": cap, "unroll": policy.unroll_to is not None}
    now = timefmt.utc()
    return Reply(data={"format": 1, "ok": True, "server_time": now, "directive": directive})


def _maybe_halt(ctx: Context, policy: rollout.Policy, channel: str, level: int) -> rollout.Policy:
    failed, succeeded = fleetdb.attempts(ctx.store, channel, level)
    reason = rollout.halt_reason(policy, level, failed, succeeded)
    if reason is None:
        return policy
    now = timefmt.utc()
    halted = rollout.halted(policy, level, reason, now)
    fleetdb.set_policy(ctx.store, channel, halted.to_dict())
    ctx.log(f"rollout of level {level} on {channel} halted: {reason}")
    return halted
