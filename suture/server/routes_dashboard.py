"""The web dashboard at ``/``: server-rendered pages for operators.

Pages are plain HTML from :mod:`suture.server.html` and one stylesheet the
server serves itself (``/ui/dashboard.css``), so the dashboard works with no
network beyond the server: no JavaScript framework, no CDN.

Who may see it: an operator who gave the admin token on ``/login`` gets a
session (:mod:`suture.server.sessions`) in an HttpOnly, SameSite=Strict
cookie. The routes are ``public`` to :mod:`suture.server.api` and check the
session themselves (:func:`_page`): a page without one redirects to the login
page instead of answering 401 as the JSON API does.

Forms that change something (the rollout controls, logout) carry the
session's CSRF token, checked on every POST. A rollout action also needs
``confirm=yes``: without it the server answers with a page that says what the
action will do and asks again, so nothing changes on a single click or a
forged request. The actions themselves are the admin API's route functions
(:mod:`suture.server.routes_admin`), so the dashboard and the API cannot
disagree on what "halt" means.

(Routes register themselves with :func:`suture.server.api.route` when this module loads.)
"""

from __future__ import annotations

import hmac
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode

from suture.errors import UsageError
from suture.repo.layout import CHANNELS
from suture.server import fleetdb, queries, rollout, routes_admin
from suture.server.api import Context, Reply, Request, route
from suture.server.catalog import LevelInfo
from suture.server.checkin import STATES
from suture.server.html import (
    CSS_PATH,
    Markup,
    el,
    hidden,
    join,
    link,
    page,
    state_badge,
    table,
    url,
)
from suture.server.sessions import LIFETIME, Session

COOKIE = "suture_session"
MAX_ROWS = 500  # hosts listed on one page; the filters narrow it down
RECENT_FAILURES = 20
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


# --- login --------------------------------------------------------------------------


def _safe_next(target: str) -> str:
    # Only a path on this server: "//evil.example" or "/\evil" would leave it.
    if target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


def _login_page(next_path: str, message: str = "") -> bytes:
    form = el(
        "form",
        el(
            "label",
            "Admin token",
            el(
                "input",
                type="password",
                name="token",
                autocomplete="current-password",
                required=True,
            ),
        ),
        hidden("next", next_path),
        el("button", "Log in", type="submit"),
        method="post",
        action="/login",
    )
    notice = el("p", message, class_="flash error") if message else ""
    hint = el("p", "The token given to suture serve with --admin-token-file.", class_="muted")
    return page("Log in", el("div", notice, form, hint, class_="login"))


@route("GET", "/login", "public")
def login_form(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """The login page (or on to the dashboard when already logged in)."""
    next_path = _safe_next(req.arg("next", "/"))
    if ctx.sessions.get(_cookie(req)) is not None:
        return _redirect(next_path)
    return _html(_login_page(next_path))


@route("POST", "/login", "public")
def login(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """Check the admin token; a new session in a cookie, then on to the page asked for."""
    form = _form(req)
    next_path = _safe_next(form.get("next", "/"))
    if ctx.admin_token is None:
        message = "This server has no admin token: start it with --admin-token-file."
        return _html(_login_page(next_path, message), HTTPStatus.FORBIDDEN)
    token = form.get("token", "").strip()
    if not (token and hmac.compare_digest(token.encode(), ctx.admin_token.encode())):
        ctx.log("dashboard: a login with a wrong token")
        return _html(
            _login_page(next_path, "That is not the admin token."), HTTPStatus.UNAUTHORIZED
        )
    session_id, _ = ctx.sessions.create()
    ctx.log("dashboard: an operator logged in")
    cookie = f"{COOKIE}={session_id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={int(LIFETIME)}"
    return _redirect(next_path, **{"Set-Cookie": cookie})


@_page("POST", "/logout")
def logout(req: Request, ctx: Context, params: dict[str, str], view: View) -> Reply:
    """End the session."""
    ctx.sessions.end(_cookie(req))
    gone = f"{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
    return _redirect("/login", **{"Set-Cookie": gone})


@route("GET", CSS_PATH, "public")
def stylesheet(req: Request, ctx: Context, params: dict[str, str]) -> Reply:
    """The dashboard's stylesheet, from the package (public: the login page uses it)."""
    css = resources.files("suture.server").joinpath("ui/dashboard.css").read_bytes()
    return Reply(body=css, content_type="text/css; charset=utf-8")


# --- what the pages read ---------------------------------------------------------------
# The fleet queries (states, exposure, filters) are suture.server.queries', shared with the
# JSON API so the dashboard and the API count the same way. Only the per-channel
# grouping the kernel view needs is local.

BuildKey = tuple[str, str, str]  # (release, build id, channel)


def _stamp(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


# --- pages ---------------------------------------------------------------------------


@_page("GET", "/")
def overview(req: Request, ctx: Context, params: dict[str, str], view: View) -> Reply:
    """The fleet at a glance: states, kernels and levels, failures, rollouts."""
    summary = queries.summary(ctx.store, ctx.clock())
    totals = summary["totals"]
    hours = queries.INACTIVE_AFTER // 3600
    cards = [("hosts", totals["hosts"], "/hosts", "")]
    cards += [(s, n, url("hosts", state=s), f"state-{s}") for s, n in totals["by_state"].items()]
    cards.append(
        (f"inactive (> {hours} h)", totals["inactive"], url("hosts", status="inactive"), "muted")
    )
    by_level: dict[tuple[str, str, int], dict[str, int]] = {}
    for g in summary["groups"]:
        counts = by_level.setdefault(
            (g["kernel"]["release"], g["kernel"]["build_id"], g["level"]), {}
        )
        counts[g["state"]] = counts.get(g["state"], 0) + g["hosts"]
        counts["inactive"] = counts.get("inactive", 0) + g["inactive"]
    group_rows = [
        [
            _build_cell(release, build_id),
            level,
            link(
                sum(n for s, n in c.items() if s != "inactive"),
                url("hosts", release=release, build=build_id, level=level),
            ),
            *(c.get(s, 0) for s in STATES),
            c["inactive"],
        ]
        for (release, build_id, level), c in sorted(by_level.items())
    ]
    failure_rows = [
        [
            _host_link(f["host_id"]),
            f["hostname"],
            f"{f['level']} -> {f['attempted_level']}",
            el("code", (f["last_error"] or "")[:300]),
            f["last_seen"],
        ]
        for f in summary["failures"][:RECENT_FAILURES]
    ]
    return view.render(
        "Fleet overview",
        _cards(cards),
        el("h2", "Rollouts"),
        _rollouts_table(ctx),
        el("h2", "Hosts by kernel build and level"),
        table(["Kernel build", "Level", "Hosts", *STATES, "Inactive"], group_rows, "No hosts."),
        el("h2", f"Recent failures ({totals['failed']})"),
        table(
            ["Host", "Hostname", "Level -> tried", "Error", "Last seen"],
            failure_rows,
            "No host reports a failure.",
        ),
        current="/",
    )


@_page("GET", "/kernels")
def kernels(req: Request, ctx: Context, params: dict[str, str], view: View) -> Reply:
    """Each kernel build: its published levels with their CVEs, and the hosts on each level."""
    catalog = _catalog(ctx)
    on_level: dict[BuildKey, dict[int, int]] = {}
    for (key, level), states in _groups(ctx).items():
        on_level.setdefault(key, {})[level] = sum(states.values())
    sections: list[object] = []
    for key in sorted(set(catalog) | set(on_level)):
        release, build_id, channel = key
        counts = on_level.get(key, {})
        levels = {lv.level: lv for lv in catalog.get(key, [])}
        rows = []
        for level in sorted(set(levels) | set(counts) | {0}):
            lv = levels.get(level)
            if lv is not None:
                what: list[object] = [lv.name, _cve_links(lv.cves), _when(lv.published)]
            elif level == 0:
                what = ["(no patch)", "", ""]
            else:
                what = [el("span", "not in the repository (yanked?)", class_="muted"), "", ""]
            hosts_href = url("hosts", release=release, build=build_id, channel=channel, level=level)
            rows.append([level, *what, link(counts.get(level, 0), hosts_href)])
        title = f"{release} {build_id[:12] or '(no build id)'} ({channel})"
        sections += [
            el("h2", title, id=f"{release}-{build_id[:12]}-{channel}"),
            el(
                "p",
                "Build id ",
                el("code", build_id or "(none: cannot be live patched)"),
                class_="muted",
            ),
            table(["Level", "Name", "CVEs fixed", "Published", "Hosts (reported level)"], rows),
        ]
    if not sections:
        sections.append(el("p", "No levels published and no hosts yet.", class_="empty"))
    return view.render("Kernel builds", *sections, current="/kernels")


def _cve_counts(ctx: Context) -> dict[str, Counter[str]]:
    """CVE -> hosts fixed / exposed / no_fix, from grouped counts (not a pass per CVE)."""
    fixes = _fix_levels(ctx)
    found: dict[str, Counter[str]] = {cve: Counter() for cve in fixes}
    for (key, level), states in _groups(ctx).items():
        for state, n in states.items():
            live = queries.live_level(key[1], state, level)
            for cve, by_build in fixes.items():
                fix = by_build.get(key) if key[1] else None
                kind = "no_fix" if fix is None else "fixed" if live >= fix.level else "exposed"
                found[cve][kind] += n
    return found


@_page("GET", "/cves")
def cves(req: Request, ctx: Context, params: dict[str, str], view: View) -> Reply:
    """Every CVE a published level fixes, with the hosts fixed and still exposed."""
    fixes = _fix_levels(ctx)
    rows = [
        [
            link(cve, url("cves", cve)),
            len(fixes[cve]),
            el("span", c["fixed"], class_="fixed"),
            el("span", c["exposed"], class_="exposed"),
            el("span", c["no_fix"], class_="nofix"),
        ]
        for cve, c in sorted(_cve_counts(ctx).items())
    ]
    headers = ["CVE", "Builds with a fix", "Hosts fixed", "Hosts exposed", "No fix published"]
    note = el(
        "p",
        "Exposed: a level of the host's build and channel fixes it, and that level is not live "
        "on the host. No fix published: no level of the host's build names the CVE "
        "(it may not be affected).",
        class_="muted",
    )
    return view.render(
        "CVEs", note, table(headers, rows, "No published level names a CVE."), current="/cves"
    )


@_page("GET", "/cves/{cve}")
def cve_detail(req: Request, ctx: Context, params: dict[str, str], view: View) -> Reply:
    """One CVE: the builds with a fix, the hosts still exposed, the hosts with no fix."""
    cve = params["cve"]
    if not queries.CVE_ID.fullmatch(cve):
        return _not_found(view, "That is not a CVE id.")
    found = queries.exposure(ctx.store, ctx.catalog, cve, ctx.clock())
    counts = found["counts"]
    cards = [
        ("fixed", counts["fixed"], "", "fixed"),
        ("exposed", counts["exposed"], "", "exposed"),
        ("no fix published", counts["no_fix"], "", "nofix"),
    ]
    builds = [
        [
            _build_cell(b["release"], b["build_id"], b["channel"]),
            b["channel"],
            f"{b['level']} ({b['name']})",
        ]
        for b in found["builds_with_fix"]
    ]
    if not builds:
        builds_table = el("p", f"No published level fixes {cve}.", class_="empty")
    else:
        builds_table = table(["Kernel build", "Channel", "Fixed in level"], builds)
    return view.render(
        cve,
        _cards(cards),
        el("h2", "Builds with a fix"),
        builds_table,
        el("h2", f"Exposed hosts ({counts['exposed']})"),
        _hosts_table(found["exposed"], extra="fixed_by"),
        el("h2", f"Hosts with no fix published for their build ({counts['no_fix']})"),
        _hosts_table(found["no_fix"]),
        el("h2", f"Fixed hosts ({counts['fixed']})"),
        _hosts_table(found["fixed"], extra="fixed_by"),
        current="/cves",
    )


_FILTERS = ("q", "status", "state", "channel", "release", "build", "level", "tag", "cve")


def _filtered(ctx: Context, args: dict[str, str]) -> list[dict[str, Any]]:
    level = args["level"]
    if level and not level.isdigit():
        raise UsageError("level is not a whole number")
    if args["status"] and args["status"] not in queries.STATUSES:
        raise UsageError(f"status is not one of {', '.join(queries.STATUSES)}")
    f = queries.HostFilter(
        release=args["release"],
        build_id=args["build"],
        level=int(level) if level else None,
        state=args["state"],
        status=args["status"],
        tag=args["tag"],
        channel=args["channel"],
        cve=args["cve"],
    )
    found = queries.hosts(ctx.store, ctx.catalog, f, ctx.clock())
    # A substring of the host id or name: a filter for people, so here rather than in the API.
    if q := args["q"].lower():
        found = [h for h in found if q in h["host_id"].lower() or q in h["hostname"].lower()]
    return found


def _filter_form(args: dict[str, str]) -> Markup:
    def choice(name: str, label: str, options: Iterable[str]) -> Markup:
        items = [el("option", f"any {label.lower()}", value="")]
        items += [el("option", o, value=o, selected=args.get(name) == o) for o in options]
        return el("label", label, el("select", *items, name=name))

    def box(name: str, label: str, size: int = 14) -> Markup:
        return el("label", label, el("input", name=name, value=args.get(name, ""), size=size))

    return el(
        "form",
        box("q", "Host id or name contains"),
        choice("status", "Status", queries.STATUSES),
        choice("channel", "Channel", CHANNELS),
        box("release", "Kernel release"),
        box("build", "Build id", 20),
        box("level", "Level", 4),
        box("tag", "Tag", 12),
        box("cve", "Exposed to CVE", 16),
        hidden("state", args["state"]) if args.get("state") else "",
        el("button", "Filter", type="submit"),
        link("Clear", "/hosts"),
        method="get",
        action="/hosts",
        class_="filters",
    )


@_page("GET", "/hosts")
def hosts(req: Request, ctx: Context, params: dict[str, str], view: View) -> Reply:
    """Hosts, filtered by the query string (status, channel, kernel, level, tag, CVE, name)."""
    args = {name: req.arg(name).strip() for name in _FILTERS}
    try:
        found = _filtered(ctx, args)
    except UsageError as e:
        view.session.flash = e.message
        found = []
    title = f"Hosts ({len(found)})"
    return view.render(title, _filter_form(args), _hosts_table(found), current="/hosts")


@_page("GET", "/hosts/{host_id}")
def host_detail(req: Request, ctx: Context, params: dict[str, str], view: View) -> Reply:
    """One host: its last report, what is fixed in memory, what is not yet, and its history."""
    found = ctx.store.hosts("h.host_id = ?", (params["host_id"],))
    if not found:
        return _not_found(view, f"No host {params['host_id']}.")
    h = found[0]
    c = h.checkin
    live = queries.live_level(c.build_id, c.state, c.level)
    fixed = queries.FixedCves(ctx.catalog)
    facts = [
        ("Host id", c.host_id),
        ("Hostname", c.hostname),
        ("Tags", ", ".join(h.tags)),
        ("Kernel", _build_cell(c.release, c.build_id, c.channel)),
        ("Build id", el("code", c.build_id)),
        ("Channel", c.channel),
        ("Level", c.level),
        ("Level last tried", c.attempted_level),
        ("State", state_badge(queries.effective_state(c.build_id, c.state))),
        ("Last error", el("pre", c.last_error) if c.last_error else ""),
        ("CVEs fixed in memory", _cve_links(fixed.of(c.release, c.build_id, c.channel, live))),
        ("Live patches", ", ".join(c.patches)),
        ("Patched functions", el("code", ", ".join(c.functions))),
        ("Uptime", "" if c.uptime is None else f"{c.uptime // 3600} h"),
        ("Agent", c.agent_version),
        ("Address", h.address),
        ("First seen", h.first_seen),
        ("Last seen", h.last_seen),
    ]
    facts_table = el("table", *(el("tr", el("th", k), el("td", v)) for k, v in facts))
    pending = [
        [lv.level, lv.name, _cve_links(lv.cves), _when(lv.published)]
        for lv in fixed.pending(c.release, c.build_id, c.channel, live)
    ]
    history = [
        [
            e["at"],
            _build_cell(e["kernel"]["release"], e["kernel"]["build_id"]),
            e["level"],
            e["attempted_level"],
            state_badge(e["state"]),
            el("code", (e["last_error"] or "")[:300]),
        ]
        for e in fleetdb.events(ctx.store, c.host_id)
    ]
    return view.render(
        f"Host {c.host_id}",
        facts_table,
        el("h2", "Published levels not live on it"),
        table(["Level", "Name", "CVEs", "Published"], pending, "None: it runs the newest level."),
        el("h2", "History"),
        table(["At", "Kernel", "Level", "Tried", "State", "Error"], history, "No history."),
        current="/hosts",
    )


# --- rollouts ----------------------------------------------------------------------------


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
        table(["Kernel build", "Level", "Name", "CVEs", "Published"], level_rows, "None yet."),
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
