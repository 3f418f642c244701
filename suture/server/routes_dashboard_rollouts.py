"""The dashboard's rollout pages: each channel's rollout, and its controls.

A rollout action needs the session's CSRF token and also ``confirm=yes``:
without it the server answers with a page that says what the action will do
and asks again, so nothing changes on a single click or a forged request. The
actions themselves are the admin API's route functions
(:mod:`suture.server.routes_admin`), so the dashboard and the API cannot
disagree on what "halt" means.

(Routes register themselves with :func:`suture.server.api.route` when this module loads.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from suture.errors import UsageError
from suture.repo.layout import CHANNELS
from suture.server import routes_admin
from suture.server.api import Context, Reply, Request
from suture.server.dashboard_base import (
    View,
    _build_cell,
    _cve_links,
    _not_found,
    _page,
    _policy,
    _redirect,
    _rollout_status,
    _rollouts_table,
    _tested,
    _when,
)
from suture.server.html import (
    Markup,
    el,
    hidden,
    link,
    table,
    url,
)


@_page("GET", "/rollouts")
def rollouts(req: Request, ctx: Context, params: dict[str, str], view: View) -> Reply:
    """Each channel's rollout at a glance."""
    return view.render("Rollouts", _rollouts_table(ctx), current="/rollouts")


def _level_input(label: str, *, required: bool, value: object = "") -> Markup:
    field_ = el("input", type="number", name="level", min="0", value=value, required=required)
    return el("label", label, field_)


def _action_form(channel: str, action: str, title: str, *fields: object, csrf: str) -> Markup:
    return el(
        "form",
        el("h3", title),
        *fields,
        hidden("csrf", csrf),
        el(
            "button",
            title,
            type="submit",
            class_="danger" if action in ("halt", "unroll") else None,
        ),
        method="post",
        action=url("rollouts", channel, action),
        class_="action",
        id=f"{action}-form",
    )


@_page("GET", "/rollouts/{channel}")
def rollout_page(req: Request, ctx: Context, params: dict[str, str], view: View) -> Reply:
    """A channel's policy, its levels, and the controls: halt, resume, promote, unroll."""
    channel = params["channel"]
    if channel not in CHANNELS:
        return _not_found(view, f"No channel {channel}.")
    policy = _policy(ctx, channel)
    csrf = view.session.csrf
    settings = [[el("code", k), el("code", json.dumps(v))] for k, v in policy.to_dict().items()]
    levels = sorted(
        (lv for lv in ctx.catalog.all() if lv.channel == channel),
        key=lambda lv: (lv.release, lv.build_id, lv.level),
    )
    level_rows = [
        [
            _build_cell(lv.release, lv.build_id, lv.channel),
            lv.level,
            lv.name,
            _cve_links(lv.cves),
            _when(lv.published),
            _tested(lv.tested),
        ]
        for lv in levels
    ]
    halt_level = policy.halted_level if policy.halted_level is not None else ""
    controls = [
        _action_form(
            channel,
            "halt",
            "Halt a level",
            _level_input("Level", required=True, value=halt_level),
            el("label", "Reason", el("input", name="reason", size=40, maxlength="200")),
            csrf=csrf,
        ),
        _action_form(channel, "resume", "Resume", csrf=csrf)
        if policy.halted_level is not None
        else el("p", "Nothing is halted: no halt to lift.", class_="muted"),
        _action_form(
            channel,
            "promote",
            "Promote a level",
            _level_input("Level", required=True, value=policy.promoted_level),
            csrf=csrf,
        ),
        _action_form(
            channel,
            "unroll",
            "Unroll",
            _level_input("Back to level (empty: end the unroll)", required=False),
            csrf=csrf,
        ),
    ]
    return view.render(
        f"Rollout: {channel}",
        el("p", "Status: ", _rollout_status(policy)),
        el("h2", "Controls"),
        *controls,
        el("h2", "Levels published on this channel"),
        table(
            ["Kernel build", "Level", "Name", "CVEs", "Published", "Lab test"],
            level_rows,
            "None yet.",
        ),
        el("h2", "Policy"),
        table(["Setting", "Value"], settings),
        el("p", "Change the other settings with PUT /api/v1/rollouts/", channel, class_="muted"),
        current="/rollouts",
    )


@dataclass(frozen=True)
class _Action:
    needs_level: bool
    call: Callable[[Request, Context, dict[str, str]], Reply]


_ACTIONS = {
    "halt": _Action(True, routes_admin.halt),
    "resume": _Action(False, routes_admin.resume),
    "promote": _Action(True, routes_admin.promote),
    "unroll": _Action(False, routes_admin.unroll),
}


def _affected(ctx: Context, channel: str, above: int) -> int:
    rows = ctx.store.execute(
        "SELECT COUNT(*) FROM hosts WHERE channel = ? AND level > ?", (channel, above)
    )
    return int(rows[0][0]) if rows else 0


def _describe(ctx: Context, channel: str, action: str, level: int | None, reason: str) -> str:
    policy = _policy(ctx, channel)
    if action == "halt":
        return (
            f"Halt level {level} on {channel}: no more hosts move to level {level} or above. "
            f"Hosts already on it stay there unless you unroll. Reason: {reason or '(none given)'}."
        )
    if action == "resume":
        if policy.halted_level is None:
            return f"Nothing is halted on {channel}; resuming changes nothing."
        return (
            f"Lift the halt of level {policy.halted_level} on {channel}: hosts may move to it "
            "again, and failures will not halt it by themselves again."
        )
    if action == "promote":
        return f"Release levels up to {level} on {channel} to every host, not only the canaries."
    if level is None:
        return f"End the unroll on {channel}: hosts may climb to the newest allowed level again."
    count = _affected(ctx, channel, level)
    return f"Send every host on {channel} back to level {level}: {count} hosts are above it now."


@_page("POST", "/rollouts/{channel}/{action}")
def rollout_action(req: Request, ctx: Context, params: dict[str, str], view: View) -> Reply:
    """Halt, resume, promote or unroll: asks for confirmation, then does it and goes back."""
    channel, action = params["channel"], params["action"]
    found = _ACTIONS.get(action)
    if channel not in CHANNELS or found is None:
        return _not_found(view, "No such rollout control.")
    back = url("rollouts", channel)
    text = view.form.get("level", "").strip()
    reason = view.form.get("reason", "").strip()[:200]
    if (text and not text.isdigit()) or (found.needs_level and not text):
        view.session.flash = "Give a level: a whole number, 0 or more."
        return _redirect(back)
    level = int(text) if text else None
    if view.form.get("confirm") != "yes":
        return _confirm_page(ctx, view, channel=channel, action=action, level=level, reason=reason)
    data: dict[str, Any] = {} if action == "resume" else {"level": level}
    if action == "halt":
        data["reason"] = reason or "halted by an operator (dashboard)"
    api_req = Request(
        "POST",
        req.path,
        headers={"content-type": "application/json"},
        body=json.dumps(data).encode(),
        address=req.address,
    )
    try:
        found.call(api_req, ctx, {"channel": channel})
    except UsageError as e:
        view.session.flash = f"Refused: {e.message}"
        return _redirect(back)
    ctx.log(f"dashboard: {action} on {channel} confirmed by an operator")
    view.session.flash = _done(channel, action, level)
    return _redirect(back)


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


def _confirm_page(
    ctx: Context, view: View, *, channel: str, action: str, level: int | None, reason: str
) -> Reply:
    fields = [hidden("csrf", view.session.csrf), hidden("confirm", "yes")]
    if level is not None:
        fields.append(hidden("level", level))
    if reason:
        fields.append(hidden("reason", reason))
    form = el(
        "form",
        *fields,
        el("button", f"Yes, {action}", type="submit", class_="danger", id="confirm"),
        " ",
        link("Cancel", url("rollouts", channel)),
        method="post",
        action=url("rollouts", channel, action),
    )
    text = _describe(ctx, channel, action, level, reason)
    box = el("div", el("p", text), form, class_="confirm")
    return view.render(f"Confirm: {action} on {channel}", box, current="/rollouts")
