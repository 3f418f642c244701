"""A host's check-in: store it, maybe halt a failing level of its build, answer the directive.

The directive is the highest level the host may run under its channel's
rollout policy (:mod:`suture.server.fleet.rollout`), read from the database
at each check-in so that a decision made in one server process holds in all.

A failed check-in that tried a level above the one it runs is a failure of
that level on that kernel build. Once enough *credible* hosts of that build
tried it and too many failed, the level is halted for that build: credible
hosts were on that build before the level was published, so hosts enrolled
after it (with a leaked registration key, say) cannot halt anything.
"""

from __future__ import annotations

from suture.contract.checkin import Checkin
from suture.contract.directive import Directive
from suture.errors import RateLimitedError, RefusedError
from suture.server.db import hosts, rollouts
from suture.server.db.hosts import Allowance, stamp
from suture.server.db.pool import Tx
from suture.server.fleet import enrolment, rollout
from suture.server.fleet.catalog import LevelInfo
from suture.server.fleet.context import Fleet

# A level signed before publish times were recorded: hosts on its build for this long count.
UNKNOWN_AGE = 86400.0  # s
STAMP_RESOLUTION = 1.0  # s: published times are signed to the second


def take(fleet: Fleet, report: Checkin, token: str, address: str) -> Directive:
    """Store a host's report; the directive for it.

    Args:
        fleet: the server's state.
        report: the check-in, checked against its form.
        token: the host token it came with; it must be the reporting host's.
        address: where the check-in came from.

    Raises:
        RefusedError: no live token (``unauthorized``), or the report names
            another host than the token's (``forbidden``).
        RateLimitedError: the host checks in too often.
    """
    now = fleet.now()
    limits = fleet.limits
    recorded = hosts.record(
        fleet.store,
        report,
        address,
        now,
        allowance=Allowance(limits.checkin_burst, limits.checkin_per_s),
        keep_events=fleet.retention.events_per_host,
        token_hash=enrolment.digest(token),
    )
    if recorded.owner is None:
        raise RefusedError(
            "a host token is needed: register with a registration key first",
            reason="unauthorized",
        )
    host_id, tags = recorded.owner
    if report.host_id != host_id:
        raise RefusedError(
            f"this token belongs to {host_id}; a host reports only about itself",
            reason="forbidden",
        )
    if not recorded.stored:
        raise RateLimitedError(
            f"host {host_id} checks in too often; try again in {recorded.retry_after:.0f} s",
            retry_after=recorded.retry_after,
        )
    channel = report.channel
    policy = rollout.Policy.from_dict(recorded.policy or {})
    levels = fleet.catalog.levels(report.release, report.build_id, channel)
    build = rollout.build_key(report.release, report.build_id)
    tried = report.attempted_level
    if report.state == "failed" and tried > report.level and report.build_id:
        level = next((lv for lv in levels if lv.level == tried), None)
        # The cheap test first: most failures change nothing, and need no lock.
        if level is not None and rollout.halt_reason(policy, tried, 1 << 30, 0, build=build):
            policy = _maybe_halt(fleet, report, level)
    cap = rollout.allowed_level(policy, levels, host_id, tags, now, build=build)
    return Directive(cap, unroll=policy.unroll_to is not None)


def _maybe_halt(fleet: Fleet, report: Checkin, level: LevelInfo) -> rollout.Policy:
    now = fleet.now()
    build = rollout.build_key(report.release, report.build_id)
    published = level.published
    seen_before = now - UNKNOWN_AGE if published is None else published + STAMP_RESOLUTION
    decided: list[str] = []

    def edit(tx: Tx, current: dict[str, object]) -> dict[str, object] | None:
        policy = rollout.Policy.from_dict(dict(current))
        failed, succeeded = rollouts.credible_attempts(
            tx,
            report.channel,
            (report.release, report.build_id),
            level.level,
            seen_before=seen_before,
        )
        reason = rollout.halt_reason(policy, level.level, failed, succeeded, build=build)
        if reason is None:
            return None
        decided.append(reason)
        return rollout.halted(policy, level.level, reason, stamp(now), build=build).to_dict()

    after = rollouts.change(fleet.store, report.channel, edit, now)
    if decided:
        fleet.log.warning(
            "rollout halted",
            channel=report.channel,
            build=build,
            level=level.level,
            reason=decided[0],
        )
    return rollout.Policy.from_dict(after)
