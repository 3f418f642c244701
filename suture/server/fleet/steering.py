"""What operators do to a rollout: replace its policy, halt, resume, promote, unroll.

The API and the dashboard both call these, so they cannot disagree on what
"halt" means. Each change reads the channel's policy under a row lock and
writes it in the same transaction (:func:`suture.server.db.rollouts.change`):
two operators, or an operator and an automatic halt in another server
process, never overwrite each other's change.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from suture.contract.targets import CHANNELS
from suture.errors import RefusedError
from suture.server.db import rollouts
from suture.server.db.hosts import stamp
from suture.server.db.pool import Tx
from suture.server.fleet.context import Fleet
from suture.server.fleet.rollout import Policy, build_key, halted, resumed


def channel_of(name: str) -> str:
    """``name`` when it is a channel.

    Raises:
        RefusedError: it is not (``not_found``).
    """
    if name not in CHANNELS:
        raise RefusedError(f"no channel {name[:40]!r}", reason="not_found")
    return name


def policy(fleet: Fleet, channel: str) -> Policy:
    """A channel's policy now."""
    return Policy.from_dict(rollouts.policy(fleet.store, channel_of(channel)))


def _change(fleet: Fleet, channel: str, what: str, edit: Any) -> Policy:
    def locked(tx: Tx, current: dict[str, Any]) -> dict[str, Any]:
        new: Policy = edit(Policy.from_dict(current))
        return new.to_dict()

    after = rollouts.change(fleet.store, channel_of(channel), locked, fleet.now())
    fleet.log.info("rollout changed", channel=channel, what=what)
    return Policy.from_dict(after)


def replace_policy(fleet: Fleet, channel: str, data: dict[str, Any]) -> Policy:
    """Replace a channel's policy (it is checked first).

    Raises:
        UsageError: a setting is unknown or out of range.
    """
    new = Policy.from_dict(data)
    return _change(fleet, channel, "policy replaced", lambda old: new)


def halt(
    fleet: Fleet, channel: str, level: int, reason: str, *, build: tuple[str, str] | None = None
) -> Policy:
    """Stop ``level`` from reaching more hosts: on every build, or on ``build`` (release, id)."""
    key = build_key(*build) if build else ""
    why = reason or "halted by an operator"
    at = stamp(fleet.now())
    return _change(
        fleet,
        channel,
        f"level {level} halted{' on ' + key if key else ''}: {why}",
        lambda old: halted(old, level, why, at, build=key),
    )


def resume(fleet: Fleet, channel: str, *, build: tuple[str, str] | None = None) -> Policy:
    """Lift the halts (all, or ``build``'s); those levels are not halted again by themselves."""
    key = build_key(*build) if build else ""
    return _change(
        fleet,
        channel,
        f"halt lifted{' on ' + key if key else ''}",
        lambda old: resumed(old, build=key),
    )


def promote(fleet: Fleet, channel: str, level: int) -> Policy:
    """Release levels up to ``level`` to every host (staged rollouts)."""
    return _change(
        fleet, channel, f"level {level} promoted", lambda old: replace(old, promoted_level=level)
    )


def unroll(fleet: Fleet, channel: str, level: int | None) -> Policy:
    """Send every host back to ``level``; None ends the unroll."""
    what = f"hosts go back to level {level}" if level is not None else "unroll ended"
    return _change(fleet, channel, what, lambda old: replace(old, unroll_to=level))
