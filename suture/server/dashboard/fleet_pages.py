"""The fleet's pages: overview, kernel and library builds, CVEs, hosts (paged, filtered), one host.

The numbers come from :mod:`suture.server.fleet.views`, as the JSON API's
do, so both count the same way. A host's page also carries the operator's
actions on it: revoke its token, delete it (each confirmed first).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs

from suture.contract.checkin import MAX_LEVEL, STATES
from suture.contract.targets import CHANNELS
from suture.errors import RefusedError, UsageError
from suture.server.dashboard.render import redirect, url
from suture.server.dashboard.rollout_pages import rollout_rows
from suture.server.dashboard.session import View, page
from suture.server.db import hosts as db_hosts
from suture.server.db import queries
from suture.server.fleet import enrolment, paging, sessions, views
from suture.server.http.replies import Reply
from suture.server.http.routing import Call

RECENT_FAILURES = 20
HISTORY_PAGE = 50
FILTERS = ("q", "status", "state", "channel", "release", "build", "level", "tag", "cve")
LISTS = (
    ("exposed", "Exposed hosts", True),
    ("partial", "Partly fixed hosts: some processes still run the unpatched code", True),
    ("no_fix", "Hosts with no fix published for their build", False),
    ("fixed", "Fixed hosts", True),
)


def _args(call: Call, names: tuple[str, ...]) -> dict[str, str]:
    found = parse_qs(call.query_string, keep_blank_values=True, max_num_fields=50)
    return {n: found.get(n, [""])[0].strip()[:200] for n in names}


@page("GET", "/")
def overview(call: Call, view: View) -> Reply:
    """The fleet at a glance: states, kernels and levels, failures, rollouts."""
    fleet = call.fleet
    summary = views.summary(fleet.store, fleet.now())
    totals = summary["totals"]
    hours = views.INACTIVE_AFTER // 3600
    cards: list[tuple[str, object, str, str]] = [("hosts", totals["hosts"], "/hosts", "")]
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
    groups = [
        {
            "release": release,
            "build_id": build_id,
            "level": level,
            "hosts": sum(n for s, n in c.items() if s != "inactive"),
            "counts": c,
            "inactive": c["inactive"],
        }
        for (release, build_id, level), c in sorted(by_level.items())
    ]
    return view.page(
        "overview.html",
        "Fleet overview",
        current="/",
        card_items=cards,
        rollouts=rollout_rows(fleet),
        groups=groups,
        states=STATES,
        failed=totals["failed"],
        failures=summary["failures"][:RECENT_FAILURES],
    )


@page("GET", "/kernels")
def kernels(call: Call, view: View) -> Reply:
    """Each kernel build and each library build: published levels, CVEs, hosts on each level.

    A library build's hosts are those whose userspace row names it, by the
    row's state (every process patched, some, none).
    """
    fleet = call.fleet
    by_build = fleet.catalog.by_build()
    kinds = {key: levels[0].kind for key, levels in by_build.items() if levels}
    on_level: dict[tuple[str, str, str], Counter[int]] = {}
    for release, build_id, channel, level, _, n in queries.channel_groups(fleet.store):
        on_level.setdefault((release, build_id, channel), Counter())[level] += n
    catalog = {k: v for k, v in by_build.items() if kinds.get(k) != "userspace"}
    sections = []
    for key in sorted(set(catalog) | set(on_level)):
        counts = on_level.get(key, Counter())
        levels = {lv.level: lv for lv in catalog.get(key, [])}
        rows = [
            {"level": level, "info": levels.get(level), "hosts": counts.get(level, 0)}
            for level in sorted(set(levels) | set(counts) | {0})
        ]
        sections.append({"release": key[0], "build_id": key[1], "channel": key[2], "rows": rows})
    return view.page(
        "kernels.html",
        "Kernel and library builds",
        current="/kernels",
        sections=sections,
        libraries=_library_sections(call, by_build, kinds),
    )


def _library_sections(
    call: Call,
    by_build: dict[tuple[str, str, str], list[Any]],
    kinds: dict[tuple[str, str, str], str],
) -> list[dict[str, Any]]:
    on_level: dict[tuple[str, str, str], dict[int, Counter[str]]] = {}
    since = views.cutoff(call.fleet.now(), views.INACTIVE_AFTER)
    for g in queries.library_groups(call.fleet.store, since):
        key = (g["library"]["soname"], g["library"]["build_id"], g["channel"])
        on_level.setdefault(key, {}).setdefault(g["level"], Counter())[g["state"]] += g["hosts"]
    found = [k for k, kind in kinds.items() if kind == "userspace"]
    sections = []
    for key in sorted(set(found) | set(on_level)):
        counts = on_level.get(key, {})
        levels = {lv.level: lv for lv in by_build.get(key, [])}
        rows = [
            {"level": level, "info": levels.get(level), "hosts": counts.get(level, Counter())}
            for level in sorted(set(levels) | set(counts))
        ]
        sections.append({"soname": key[0], "build_id": key[1], "channel": key[2], "rows": rows})
    return sections


def _groups(call: Call) -> dict[tuple[tuple[str, str, str], int], dict[str, int]]:
    found: dict[tuple[tuple[str, str, str], int], dict[str, int]] = {}
    for release, build_id, channel, level, state, n in queries.channel_groups(call.fleet.store):
        found.setdefault(((release, build_id, channel), level), {})[state] = n
    return found


@page("GET", "/cves")
def cves(call: Call, view: View) -> Reply:
    """Every CVE a published level fixes, with the hosts fixed, partly fixed and still exposed."""
    fleet = call.fleet
    counts = views.cve_table(fleet.store, fleet.catalog, _groups(call))
    builds: Counter[str] = Counter()
    for levels in fleet.catalog.by_build().values():
        for cve in {c for lv in levels for c in lv.cves}:
            builds[cve] += 1
    rows = [
        {"cve": cve, "builds": builds[cve], **{k: c[k] for k in views.KINDS}}
        for cve, c in sorted(counts.items())
    ]
    return view.page("cves.html", "CVEs", current="/cves", rows=rows)


def _cve_page(call: Call, view: View, cve: str, kind: str) -> Reply:
    fleet = call.fleet
    if not views.is_cve(cve):
        return view.not_found("That is not a CVE id.")
    cursor = _args(call, ("cursor",))["cursor"]
    try:
        found = views.exposure(
            fleet.store,
            fleet.catalog,
            cve,
            fleet.now(),
            kind=kind,
            cursor=cursor,
            limit=paging.DEFAULT_LIMIT,
        )
    except UsageError as e:
        return view.not_found(e.message)
    next_urls = {
        k: url("cves", cve, k, cursor=c) if c else None for k, c in found["next_cursors"].items()
    }
    lists = [entry for entry in LISTS if not kind or entry[0] == kind]
    return view.page(
        "cve.html", cve, current="/cves", cve=cve, found=found, lists=lists, next_urls=next_urls
    )


@page("GET", "/cves/{cve}")
def cve_detail(call: Call, view: View) -> Reply:
    """One CVE: the builds with a fix, the hosts still exposed, partly fixed, with no fix."""
    return _cve_page(call, view, call.params["cve"], "")


@page("GET", "/cves/{cve}/{kind}")
def cve_list(call: Call, view: View) -> Reply:
    """The next pages of one of a CVE's lists."""
    if call.params["kind"] not in views.KINDS:
        return view.not_found("No such list.")
    return _cve_page(call, view, call.params["cve"], call.params["kind"])


def _host_query(args: dict[str, str]) -> views.HostQuery:
    level = args["level"]
    if level and not (level.isascii() and level.isdigit() and int(level) <= MAX_LEVEL):
        raise UsageError(f"level is not a whole number from 0 to {MAX_LEVEL}")
    if args["status"] and args["status"] not in views.STATUSES:
        raise UsageError(f"status is not one of {', '.join(views.STATUSES)}")
    if args["state"] and args["state"] not in STATES:
        raise UsageError(f"state is not one of {', '.join(STATES)}")
    if args["cve"] and not views.is_cve(args["cve"]):
        raise UsageError("that is not a CVE id (e.g. CVE-2026-1234)")
    return views.HostQuery(
        release=args["release"],
        build_id=args["build"],
        level=int(level) if level else None,
        state=args["state"],
        status=args["status"],
        tag=args["tag"],
        channel=args["channel"],
        cve=args["cve"],
        contains=args["q"],
    )


@page("GET", "/hosts")
def hosts(call: Call, view: View) -> Reply:
    """Hosts, filtered by the query string, a page at a time."""
    fleet = call.fleet
    args = _args(call, (*FILTERS, "cursor"))
    found: list[dict[str, Any]] = []
    total, next_url = 0, None
    try:
        q = _host_query(args)
        total = views.count_hosts(fleet.store, fleet.catalog, q, fleet.now())
        answer = views.hosts_page(
            fleet.store,
            fleet.catalog,
            q,
            fleet.now(),
            cursor=args["cursor"],
            limit=paging.DEFAULT_LIMIT,
        )
        found = answer["hosts"]
        if answer["next_cursor"]:
            kept = {k: v for k, v in args.items() if k != "cursor"}
            next_url = url("hosts", **kept, cursor=answer["next_cursor"])
    except UsageError as e:  # shown on this page, not kept for the next
        view = View(replace(view.session, flash=e.message))
    return view.page(
        "hosts.html",
        f"Hosts ({total})",
        current="/hosts",
        args=args,
        hosts=found,
        next_url=next_url,
        statuses=views.STATUSES,
        channels=CHANNELS,
    )


@page("GET", "/hosts/{host_id}")
def host_detail(call: Call, view: View) -> Reply:
    """One host: its last report, what is fixed in memory (in full, in part), its history.

    Beside the kernel's level, one row per library build with a userspace
    level: its level, CVEs, state and processes, and the newer levels published.
    """
    fleet = call.fleet
    record = db_hosts.get(fleet.store, call.params["host_id"])
    if record is None:
        return view.not_found(f"No host {call.params['host_id']}.")
    c = record.checkin
    live = views.live_level(c.build_id, c.state, c.level)
    fixed = views.FixedCves(fleet.catalog)
    memory = fixed.of_host(record)
    userspace = [
        {
            "row": row,
            "cves": fixed.of_library(row, c.channel),
            "newer": fixed.pending(row.soname, row.build_id, c.channel, row.level),
        }
        for row in c.userspace
    ]
    cursor = _args(call, ("events",))["events"]
    kind = f"events:{c.host_id}"
    try:
        before = paging.decode(kind, cursor) if cursor else None
    except UsageError:
        before = None
    history = db_hosts.events(
        fleet.store, c.host_id, before if isinstance(before, int) else None, HISTORY_PAGE + 1
    )
    more = len(history) > HISTORY_PAGE
    history = history[:HISTORY_PAGE]
    history_next = (
        url("hosts", c.host_id, events=paging.encode(kind, history[-1]["seq"])) if more else None
    )
    return view.page(
        "host.html",
        f"Host {c.host_id}",
        current="/hosts",
        c=c,
        h=record,
        state=views.effective_state(c.build_id, c.state),
        fixed=memory.fixed,
        partial=memory.partial,
        userspace=userspace,
        pending=fixed.pending(c.release, c.build_id, c.channel, live),
        history=history,
        history_next=history_next,
    )


@page("POST", "/hosts/{host_id}/{action}")
def host_action(call: Call, view: View) -> Reply:
    """Revoke a host's token or delete the host: asks for confirmation, then does it."""
    fleet = call.fleet
    host_id, action = call.params["host_id"], call.params["action"]
    if action not in ("revoke", "delete"):
        return view.not_found("No such action.")
    back = url("hosts", host_id)
    allow = call.form.get("allow_reenrol") == "yes"
    if call.form.get("confirm") != "yes":
        if action == "delete":
            text = (
                f"Delete host {host_id}: its report, its history and its token go. If it "
                "still runs, its agent enrols afresh with its registration key."
            )
        else:
            text = (
                f"Revoke the token of host {host_id}: its check-ins are refused from now on. "
                + (
                    "Its id may enrol again with a registration key (a reinstalled host)."
                    if allow
                    else "Its id may not enrol again until you delete the host."
                )
            )
        fields = [("csrf", view.session.csrf), ("confirm", "yes")]
        if allow:
            fields.append(("allow_reenrol", "yes"))
        return view.page(
            "confirm.html",
            f"Confirm: {action} host {host_id}",
            current="/hosts",
            text=text,
            fields=fields,
            action=url("hosts", host_id, action),
            verb=action,
            back=back,
        )
    try:
        if action == "delete":
            enrolment.delete_host(fleet, host_id)
            done, back = f"Done: host {host_id} is deleted.", "/hosts"
        else:
            enrolment.revoke_host(fleet, host_id, allow_reenrol=allow)
            done = f"Done: the token of host {host_id} is revoked."
    except RefusedError as e:
        done = f"Refused: {e.message}"
    sessions.flash(fleet, view.session, done)
    return redirect(back)


ENDPOINTS = [overview, kernels, cves, cve_detail, cve_list, hosts, host_detail, host_action]
