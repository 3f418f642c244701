"""Rollout control per channel: which level each host may run, and when to stop a bad level.

A policy (JSON, stored per channel) says::

    {"delay_hours": 2,                 # a level waits this long after it was published
     "canary_tags": ["env:canary"],    # staged: these hosts, and
     "canary_percent": 10,             #   this share of the others (by host id), get new levels
     "canary_hours": 24,               #   first; everyone else after this long (null: on promote)
     "promoted_level": 3,              # levels up to this one go to everyone
     "sticky": {"env:prod": 2},        # hosts with this tag never go above this level
     "failure_threshold": 0.2,         # halt a level of a build when this share of the
     "min_attempts": 5,                #   credible hosts that tried it failed, once this many tried
     "halted_level": 4, "halt_reason": "...", "halted_at": "...",  # an operator's: all builds
     "resumed_level": 4,               # an operator lifted its halt: not halted again by itself
     "build_halts": {"6.1.0-56-amd64/<build id>": {"level": 4, "reason": "...", "at": "..."}},
     "build_resumed": {"6.1.0-56-amd64/<build id>": 4},
     "unroll_to": 2}                   # everyone goes back to this level (agents downgrade)

The server answers each check-in with the highest level the host may run
(:func:`allowed_level`); the agent takes it as a cap on top of its own
configuration, and the levels themselves still come through TUF. Every
decision here is a pure function of the policy, the levels and the host.

**Automatic halts are per kernel build**, and count only *credible* hosts:
hosts that were on that build before the level was published
(:func:`suture.server.fleet.checkins` asks the store). A level that fails on
one build is not held back on the others, and hosts enrolled after the level
appeared (say, with a leaked registration key) cannot halt it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from suture.errors import UsageError
from suture.server.fleet.catalog import LevelInfo

HOUR = 3600.0


@dataclass(frozen=True)
class Policy:
    """A channel's rollout policy; see the module docstring."""

    delay_hours: float = 0.0
    canary_tags: tuple[str, ...] = ()
    canary_percent: int = 0
    canary_hours: float | None = None
    promoted_level: int = 0
    sticky: dict[str, int] = field(default_factory=dict)
    failure_threshold: float = 0.2
    min_attempts: int = 5
    halted_level: int | None = None
    halt_reason: str = ""
    halted_at: str = ""
    resumed_level: int | None = None
    build_halts: dict[str, dict[str, Any]] = field(default_factory=dict)
    build_resumed: dict[str, int] = field(default_factory=dict)
    unroll_to: int | None = None

    @property
    def staged(self) -> bool:
        """True when new levels go to canary hosts first."""
        return bool(self.canary_tags) or self.canary_percent > 0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        data = asdict(self)
        data["canary_tags"] = list(self.canary_tags)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        """Read and check a policy (from the database or an operator).

        Raises:
            UsageError: an unknown field or a value out of range, naming it.
        """
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise UsageError(
                f"unknown rollout setting {unknown[0]!r}",
                hint=f"the settings are: {', '.join(cls.__dataclass_fields__)}",
            )
        tags = data.get("canary_tags", [])
        if not isinstance(tags, list | tuple):  # tuple() would split a string, take a dict's keys
            raise UsageError("rollout setting canary_tags is not a list of tags")
        p = cls(**{**data, "canary_tags": tuple(tags)})
        _check(p)
        return p


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _level(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _sticky(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and _level(n) for k, n in value.items()
    )


def _halts(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str)
        and isinstance(h, dict)
        and _level(h.get("level"))
        and isinstance(h.get("reason", ""), str)
        and isinstance(h.get("at", ""), str)
        for k, h in value.items()
    )


def build_key(release: str, build_id: str) -> str:
    """How a kernel build names its halts in a policy: ``<release>/<build id>``."""
    return f"{release}/{build_id}"


# setting -> (is it well formed, what it must be)
_RULES: dict[str, tuple[Any, str]] = {
    "delay_hours": (lambda v: _number(v) and v >= 0, "a number of hours, 0 or more"),
    "canary_tags": (lambda v: all(isinstance(t, str) and t for t in v), "a list of tags"),
    "canary_percent": (lambda v: _level(v) and v <= 100, "an integer from 0 to 100"),
    "canary_hours": (lambda v: v is None or (_number(v) and v >= 0), "null or hours, 0 or more"),
    "promoted_level": (_level, "a level, 0 or more"),
    "sticky": (_sticky, "an object of tag -> level"),
    "failure_threshold": (lambda v: _number(v) and 0 < v <= 1, "a share above 0, at most 1"),
    "min_attempts": (lambda v: _level(v) and v >= 1, "an integer, 1 or more"),
    "halted_level": (lambda v: v is None or _level(v), "null or a level"),
    "halt_reason": (lambda v: isinstance(v, str), "a string"),
    "halted_at": (lambda v: isinstance(v, str), "a string"),
    "resumed_level": (lambda v: v is None or _level(v), "null or a level"),
    "build_halts": (_halts, "an object of build -> {level, reason, at}"),
    "build_resumed": (_sticky, "an object of build -> level"),
    "unroll_to": (lambda v: v is None or _level(v), "null or a level"),
}


def _check(p: Policy) -> None:
    for name, (ok, expected) in _RULES.items():
        if not ok(getattr(p, name)):
            raise UsageError(
                f"rollout setting {name} is not {expected}", hint="fix it and try again"
            )


def is_canary(policy: Policy, host_id: str, tags: tuple[str, ...]) -> bool:
    """A canary host: a canary tag, or its host id's stable share below canary_percent."""
    if set(tags) & set(policy.canary_tags):
        return True
    bucket = int.from_bytes(hashlib.sha256(host_id.encode()).digest()[:4], "big") % 100
    return bucket < policy.canary_percent


def allowed_level(
    policy: Policy,
    levels: list[LevelInfo],
    host_id: str,
    tags: tuple[str, ...],
    now: float,
    *,
    build: str = "",
) -> int | None:
    """The highest level this host may run; None when its build has no levels (no opinion).

    ``build`` (:func:`build_key`) is the host's kernel build, for the halts of that build.
    """
    if not levels:
        return None
    ready = [lv for lv in levels if _age(lv, now) >= policy.delay_hours * HOUR]
    cap = math.inf
    if policy.unroll_to is not None:
        cap = policy.unroll_to
    if policy.halted_level is not None:
        cap = min(cap, policy.halted_level - 1)
    if build in policy.build_halts:
        cap = min(cap, policy.build_halts[build]["level"] - 1)
    if policy.staged and not is_canary(policy, host_id, tags):
        released = [policy.promoted_level]
        if policy.canary_hours is not None:
            wait = (policy.delay_hours + policy.canary_hours) * HOUR
            released += [lv.level for lv in ready if _age(lv, now) >= wait]
        cap = min(cap, max(released))
    for tag in tags:
        if tag in policy.sticky:
            cap = min(cap, policy.sticky[tag])
    return max((lv.level for lv in ready if lv.level <= cap), default=0)


def _age(lv: LevelInfo, now: float) -> float:
    return math.inf if lv.published is None else now - lv.published


def halt_reason(
    policy: Policy, level: int, failed: int, succeeded: int, *, build: str = ""
) -> str | None:
    """Why ``level`` (of ``build``) must be halted now, or None: enough tried, too many failed."""
    if policy.halted_level is not None and policy.halted_level <= level:
        return None  # already halted at or below it
    if build in policy.build_halts and policy.build_halts[build]["level"] <= level:
        return None
    if policy.resumed_level == level or policy.build_resumed.get(build) == level:
        return None  # an operator looked at its failures and let it go on
    tried = failed + succeeded
    if tried < policy.min_attempts or failed / tried < policy.failure_threshold:
        return None
    return (
        f"{failed} of {tried} hosts that tried level {level} failed "
        f"(threshold {policy.failure_threshold:.0%})"
    )


def halted(policy: Policy, level: int, reason: str, at: str, *, build: str = "") -> Policy:
    """``policy`` with ``level`` halted: on every build, or on ``build`` only."""
    if not build:
        return replace(policy, halted_level=level, halt_reason=reason, halted_at=at)
    halts = {**policy.build_halts, build: {"level": level, "reason": reason, "at": at}}
    return replace(policy, build_halts=halts)


def resumed(policy: Policy, *, build: str = "") -> Policy:
    """``policy`` with the halts lifted (all, or ``build``'s), not to come back by themselves.

    The levels that were halted are recorded as resumed: the operator has
    looked at their failures, so they are not halted again automatically.
    """
    if build:
        halt = policy.build_halts.get(build)
        halts = {k: h for k, h in policy.build_halts.items() if k != build}
        again = {**policy.build_resumed, build: halt["level"]} if halt else policy.build_resumed
        return replace(policy, build_halts=halts, build_resumed=again)
    again = {**policy.build_resumed, **{k: h["level"] for k, h in policy.build_halts.items()}}
    return replace(
        policy,
        halted_level=None,
        halt_reason="",
        halted_at="",
        resumed_level=policy.halted_level
        if policy.halted_level is not None
        else policy.resumed_level,
        build_halts={},
        build_resumed=again,
    )


def halted_count(policy: Policy) -> int:
    """How many halts are in force (every-build halt and per-build halts)."""
    return (policy.halted_level is not None) + len(policy.build_halts)
