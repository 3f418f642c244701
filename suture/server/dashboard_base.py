"""What the dashboard's pages share: replies, sessions, the data they read, small pieces.

Pages are plain HTML from :mod:`suture.server.html` and one stylesheet the
server serves itself (``/ui/dashboard.css``), so the dashboard works with no
network beyond the server: no JavaScript framework, no CDN.

Who may see it: an operator who gave the admin token on ``/login`` gets a
session (:mod:`suture.server.sessions`) in an HttpOnly, SameSite=Strict
cookie. The routes are ``public`` to :mod:`suture.server.api` and check the
session themselves (:func:`_page`): a page without one redirects to the login
page instead of answering 401 as the JSON API does.

Forms that change something (the rollout controls, logout) carry the
session's CSRF token, checked on every POST by :func:`_page`.

The pages themselves are in :mod:`suture.server.routes_dashboard` (login, the
fleet pages) and :mod:`suture.server.routes_dashboard_rollouts` (the rollout
controls).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode

from suture import timefmt
from suture.repo.layout import CHANNELS
from suture.server import fleetdb, rollout
from suture.server.api import Context, Reply, Request, route
from suture.server.catalog import LevelInfo
from suture.server.html import (
    Markup,
    el,
    join,
    link,
    page,
    state_badge,
    table,
    url,
)
from suture.server.sessions import Session

COOKIE = "suture_session"
MAX_ROWS = 500  # hosts listed on one page; the filters narrow it down
# HTML pages: only this server's stylesheet, no scripts at all, never inside a frame
# (a framed confirmation page could be clicked through by another site).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@dataclass
class View:
    """What a page handler gets beside the request: the operator's session and form fields."""

    session: Session
    form: dict[str, str] = field(default_factory=dict)

    def render(self, title: str, *content: object, current: str = "") -> Reply:
        """A page for this session (its CSRF token in the logout form, its message shown once)."""
        flash, self.session.flash = self.session.flash, ""
        body = page(title, *content, csrf=self.session.csrf, flash=flash, current=current)
        return _html(body)


PageHandler = Callable[[Request, Context, dict[str, str], View], Reply]


def _html(body: bytes, status: HTTPStatus = HTTPStatus.OK) -> Reply:
    return Reply(
        status, body=body, content_type="text/html; charset=utf-8", headers=SECURITY_HEADERS
    )


def _redirect(location: str, **headers: str) -> Reply:
    return Reply(
        HTTPStatus.SEE_OTHER,
        body=b"",
        content_type="text/plain",
        headers={"Location": location, **headers},
    )


def _cookie(req: Request) -> str:
    for part in req.headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return ""


def _form(req: Request) -> dict[str, str]:
    ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return {}
    try:
        fields = parse_qs(req.body.decode(), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in fields.items()}


def _page(method: str, pattern: str) -> Callable[[PageHandler], PageHandler]:
    """Register a dashboard page: it needs a session, and a POST needs the session's CSRF token."""

    def register(handler: PageHandler) -> PageHandler:
        def run(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
            session = ctx.sessions.get(_cookie(req))
            if session is None:
                asked = req.path + (f"?{urlencode(req.query, doseq=True)}" if req.query else "")
                return _redirect(url("login", next=asked if method == "GET" else ""))
            view = View(session, _form(req) if method == "POST" else {})
            if method == "POST" and not hmac.compare_digest(
                view.form.get("csrf", "").encode(), session.csrf.encode()
            ):
                return _refused(
                    HTTPStatus.FORBIDDEN,
                    "This form is stale or did not come from this dashboard (CSRF check). "
                    "Go back, reload the page and try again.",
                )
            return handler(req, ctx, {k: unquote(v) for k, v in params.items()}, view)

        route(method, pattern, "public")(run)
        return handler

    return register


def _refused(status: HTTPStatus, message: str) -> Reply:
    body = page("Refused", el("p", message, class_="flash error"), el("p", link("Back", "/")))
    return _html(body, status)


def _not_found(view: View, what: str) -> Reply:
    reply = view.render("Not found", el("p", what), el("p", link("Overview", "/")))
    reply.status = HTTPStatus.NOT_FOUND
    return reply


# --- what the pages read ---------------------------------------------------------------
# The fleet queries (states, exposure, filters) are suture.server.queries', shared with the
# JSON API so the dashboard and the API count the same way. Only the per-channel
# grouping the kernel view needs is local.

BuildKey = tuple[str, str, str]  # (release, build id, channel)


def _stamp(unix: float) -> str:
    return timefmt.utc(unix)


def _groups(ctx: Context) -> dict[tuple[BuildKey, int], dict[str, int]]:
    """Host counts by (build, reported level), then by state as reported."""
    rows = ctx.store.execute(
        "SELECT kernel_release, kernel_build_id, channel, level, state, COUNT(*) FROM hosts"
        " GROUP BY kernel_release, kernel_build_id, channel, level, state"
    )
    found: dict[tuple[BuildKey, int], dict[str, int]] = {}
    for release, build_id, channel, level, state, count in rows:
        found.setdefault(((release, build_id, channel), int(level)), {})[state] = int(count)
    return found


def _catalog(ctx: Context) -> dict[BuildKey, list[LevelInfo]]:
    found: dict[BuildKey, list[LevelInfo]] = {}
    for lv in ctx.catalog.all():
        found.setdefault((lv.release, lv.build_id, lv.channel), []).append(lv)
    return found


def _fix_levels(ctx: Context) -> dict[str, dict[BuildKey, LevelInfo]]:
    """CVE -> build -> the first level that fixes it (levels are cumulative)."""
    found: dict[str, dict[BuildKey, LevelInfo]] = {}
    for key, levels in _catalog(ctx).items():
        for lv in sorted(levels, key=lambda lv: lv.level):
            for cve in lv.cves:
                found.setdefault(cve, {}).setdefault(key, lv)
    return found


def _policy(ctx: Context, channel: str) -> rollout.Policy:
    return rollout.Policy.from_dict(fleetdb.policy(ctx.store, channel))


# --- small pieces -------------------------------------------------------------------


def _build_cell(release: str, build_id: str, channel: str = "") -> Markup:
    # The kernel view has a section per build and channel; without the channel, its top.
    anchor = f"/kernels#{release}-{build_id[:12]}-{channel}" if channel else "/kernels"
    return join([link(release, anchor), " ", el("code", build_id[:12] or "(no build id)")])


def _host_link(host_id: str) -> Markup:
    return link(host_id, url("hosts", host_id))


def _cve_links(cves: Iterable[str]) -> Markup:
    return join((link(c, url("cves", c)) for c in cves), ", ")


def _when(unix: float | None) -> str:
    return "" if unix is None else _stamp(unix)


# A level's signed lab test result (suture test), as the dashboard shows it.
_TESTED = {"passed": "tested", "failed": "test FAILED", "untested": "not tested"}


def _tested(result: str) -> Markup:
    return el("span", _TESTED.get(result, result), class_=f"tested-{result}")


def _rollout_status(policy: rollout.Policy) -> Markup:
    parts: list[object] = []
    if policy.halted_level is not None:
        parts.append(el("span", f"halted at level {policy.halted_level}", class_="halted"))
        parts.append(f" ({policy.halt_reason})" if policy.halt_reason else "")
    if policy.unroll_to is not None:
        parts.append(el("span", f" unrolling to level {policy.unroll_to}", class_="halted"))
    return join(parts) if parts else el("span", "rolling out", class_="fixed")


def _rollouts_table(ctx: Context) -> Markup:
    newest: dict[str, int] = {}
    for lv in ctx.catalog.all():
        newest[lv.channel] = max(newest.get(lv.channel, 0), lv.level)
    rows = []
    for channel in CHANNELS:
        policy = _policy(ctx, channel)
        rows.append(
            [
                link(channel, url("rollouts", channel)),
                _rollout_status(policy),
                newest.get(channel, "none"),
                policy.promoted_level if policy.staged else "(not staged: every level)",
            ]
        )
    return table(["Channel", "Status", "Newest level published", "Promoted to everyone"], rows)


def _hosts_table(found: list[dict[str, Any]], extra: str = "") -> Markup:
    """Hosts as :mod:`suture.server.queries` gives them; ``extra`` names one more column."""
    rows = [
        [
            _host_link(h["host_id"]),
            h["hostname"],
            _build_cell(h["kernel"]["release"], h["kernel"]["build_id"], h["channel"]),
            h["channel"],
            h["level"],
            *([h.get(extra, {}).get("level", "")] if extra else []),
            state_badge(h["status"]),
            h["last_seen"],
        ]
        for h in found[:MAX_ROWS]
    ]
    note = (
        el("p", f"The first {MAX_ROWS} of {len(found)}; filter to see the rest.", class_="muted")
        if len(found) > MAX_ROWS
        else ""
    )
    headers = ["Host", "Hostname", "Kernel", "Channel", "Level"]
    headers += ["Fixed by level"] if extra else []
    headers += ["Status", "Last seen"]
    return join([note, table(headers, rows, "No hosts.")])


def _cards(items: Iterable[tuple[str, object, str, str]]) -> Markup:
    """Big numbers: (label, count, link or "", CSS class)."""
    cards = [
        el(
            "a" if href else "div",
            el("span", n, class_="count"),
            label,
            href=href or None,
            class_=f"card {cls}",
        )
        for label, n, href, cls in items
    ]
    return el("div", *cards, class_="cards")
