"""The web dashboard at ``/``: login, and the fleet pages (overview, kernels, CVEs, hosts).

What the pages share (sessions, CSRF checks, replies, the data they read, the
small rendering pieces) is in :mod:`suture.server.dashboard_base`; the rollout
pages and controls are in :mod:`suture.server.routes_dashboard_rollouts`.

(Routes register themselves with :func:`suture.server.api.route` when this module loads.)
"""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Iterable
from http import HTTPStatus
from importlib import resources
from typing import Any

from suture.errors import UsageError
from suture.repo.layout import CHANNELS
from suture.server import fleetdb, queries
from suture.server.api import Context, Reply, Request, route
from suture.server.checkin import STATES
from suture.server.dashboard_base import (
    COOKIE,
    BuildKey,
    View,
    _build_cell,
    _cards,
    _catalog,
    _cookie,
    _cve_links,
    _fix_levels,
    _form,
    _groups,
    _host_link,
    _hosts_table,
    _html,
    _not_found,
    _page,
    _redirect,
    _rollouts_table,
    _tested,
    _when,
)
from suture.server.html import (
    CSS_PATH,
    Markup,
    el,
    hidden,
    link,
    page,
    state_badge,
    table,
    url,
)
from suture.server.sessions import LIFETIME

RECENT_FAILURES = 20


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
                what: list[object] = [
                    lv.name,
                    _cve_links(lv.cves),
                    _when(lv.published),
                    _tested(lv.tested),
                ]
            elif level == 0:
                what = ["(no patch)", "", "", ""]
            else:
                what = [el("span", "not in the repository (yanked?)", class_="muted"), "", "", ""]
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
            table(
                ["Level", "Name", "CVEs fixed", "Published", "Lab test", "Hosts (reported level)"],
                rows,
            ),
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
        [lv.level, lv.name, _cve_links(lv.cves), _when(lv.published), _tested(lv.tested)]
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
        table(
            ["Level", "Name", "CVEs", "Published", "Lab test"],
            pending,
            "None: it runs the newest level.",
        ),
        el("h2", "History"),
        table(["At", "Kernel", "Level", "Tried", "State", "Error"], history, "No history."),
        current="/hosts",
    )
