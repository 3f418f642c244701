"""The rollout pages: each channel's rollout, and its controls (halt, resume, promote, unroll).

An action needs the session's CSRF token and also ``confirm=yes``: without
it the server answers with a page that says what the action will do and asks
again, so nothing changes on a single click or a forged request. The actions
are :mod:`suture.server.fleet.steering`'s, as the API's are, so the dashboard
and the API cannot disagree on what "halt" means.
"""

from __future__ import annotations

import json
from typing import Any

from suture.contract.checkin import MAX_LEVEL
from suture.contract.targets import CHANNELS
from suture.errors import UsageError
from suture.server.dashboard.render import redirect, url
from suture.server.dashboard.session import View, page
from suture.server.db import queries
from suture.server.fleet import sessions, steering
from suture.server.fleet.context import Fleet
from suture.server.http.replies import Reply
from suture.server.http.routing import Call

ACTIONS = {"halt": True, "resume": False, "promote": True, "unroll": False}  # -> needs a level


def rollout_rows(fleet: Fleet) -> list[dict[str, Any]]:
    """Each channel's rollout: its policy, newest level, what is promoted."""
    newest: dict[str, int] = {}
    for lv in fleet.catalog.all():
        newest[lv.channel] = max(newest.get(lv.channel, 0), lv.level)
    rows = []
    for channel in CHANNELS:
        policy = steering.policy(fleet, channel)
        rows.append(
            {
                "channel": channel,
                "policy": policy,
                "newest": newest.get(channel, "none"),
                "promoted": policy.promoted_level if policy.staged else "(not staged: every level)",
            }
        )
    return rows


@page("GET", "/rollouts")
def rollouts(call: Call, view: View) -> Reply:
    """Each channel's rollout at a glance."""
    return view.page(
        "rollouts.html", "Rollouts", current="/rollouts", rollouts=rollout_rows(call.fleet)
    )


@page("GET", "/rollouts/{channel}")
def rollout_page(call: Call, view: View) -> Reply:
    """A channel's policy, its levels, and the controls."""
    channel = call.params["channel"]
    if channel not in CHANNELS:
        return view.not_found(f"No channel {channel}.")
    policy = steering.policy(call.fleet, channel)
    levels = sorted(
        (lv for lv in call.fleet.catalog.all() if lv.channel == channel),
        key=lambda lv: (lv.release, lv.build_id, lv.level),
    )
    settings = [(k, json.dumps(v)) for k, v in policy.to_dict().items()]
    return view.page(
        "rollout.html",
        f"Rollout: {channel}",
        current="/rollouts",
        channel=channel,
        policy=policy,
        levels=levels,
        settings=settings,
    )


def _describe(fleet: Fleet, channel: str, action: str, level: int | None, reason: str) -> str:
    policy = steering.policy(fleet, channel)
    if action == "halt":
        return (
            f"Halt level {level} on {channel}: no more hosts move to level {level} or above. "
            f"Hosts already on it stay there unless you unroll. Reason: {reason or '(none given)'}."
        )
    if action == "resume":
        if policy.halted_level is None and not policy.build_halts:
            return f"Nothing is halted on {channel}; resuming changes nothing."
        return (
            f"Lift the halts on {channel}: hosts may move to those levels again, and failures "
            "will not halt them by themselves again."
        )
    if action == "promote":
        return f"Release levels up to {level} on {channel} to every host, not only the canaries."
    if level is None:
        return f"End the unroll on {channel}: hosts may climb to the newest allowed level again."
    count = queries.above(fleet.store, channel, level)
    return f"Send every host on {channel} back to level {level}: {count} hosts are above it now."


def _done(channel: str, action: str, level: int | None) -> str:
    if action == "halt":
        return f"Done: level {level} on {channel} is halted."
    if action == "resume":
        return f"Done: the halt on {channel} is lifted."
    if action == "promote":
        return f"Done: levels up to {level} on {channel} go to every host."
    if level is None:
        return f"Done: the unroll on {channel} has ended."
    return f"Done: hosts on {channel} go back to level {level}."


@page("POST", "/rollouts/{channel}/{action}")
def rollout_action(call: Call, view: View) -> Reply:
    """Halt, resume, promote or unroll: asks for confirmation, then does it and goes back."""
    fleet = call.fleet
    channel, action = call.params["channel"], call.params["action"]
    if channel not in CHANNELS or action not in ACTIONS:
        return view.not_found("No such rollout control.")
    back = url("rollouts", channel)
    text = call.form.get("level", "").strip()
    reason = call.form.get("reason", "").strip()[:200]
    whole = text.isascii() and text.isdigit() and len(text) <= 7 and int(text) <= MAX_LEVEL
    if (text and not whole) or (ACTIONS[action] and not text):
        sessions.flash(fleet, view.session, f"Give a level: a whole number from 0 to {MAX_LEVEL}.")
        return redirect(back)
    level = int(text) if text else None
    if call.form.get("confirm") != "yes":
        fields = [("csrf", view.session.csrf), ("confirm", "yes")]
        if level is not None:
            fields.append(("level", str(level)))
        if reason:
            fields.append(("reason", reason))
        return view.page(
            "confirm.html",
            f"Confirm: {action} on {channel}",
            current="/rollouts",
            text=_describe(fleet, channel, action, level, reason),
            fields=fields,
            action=url("rollouts", channel, action),
            verb=action,
            back=back,
        )
    try:
        if action == "halt":
            assert level is not None  # noqa: S101 - checked above
            steering.halt(fleet, channel, level, reason or "halted by an operator (dashboard)")
        elif action == "resume":
            steering.resume(fleet, channel)
        elif action == "promote":
            assert level is not None  # noqa: S101
            steering.promote(fleet, channel, level)
        else:
            steering.unroll(fleet, channel, level)
    except UsageError as e:
        sessions.flash(fleet, view.session, f"Refused: {e.message}")
        return redirect(back)
    fleet.log.info("dashboard: rollout action confirmed", action=action, channel=channel)
    sessions.flash(fleet, view.session, _done(channel, action, level))
    return redirect(back)


ENDPOINTS = [rollouts, rollout_page, rollout_action]
