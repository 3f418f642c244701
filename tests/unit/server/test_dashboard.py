"""The web dashboard over real HTTP: login, pages, CSRF, confirmation, escaping.

A real server and repository on loopback, with a small simulated fleet
(agent cycles with fake kernels, as in test_fleet_rollout): two levels with a
CVE each, three hosts of which one failed level 2, and one host on a build
with no levels whose report carries markup (written straight into the
database: check-ins refuse such a hostname, the dashboard must not rely on it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from suture.repo import publish
from suture.repo.layout import Layout
from suture.server import Server
from suture.server.db import DbUrl, open_store
from suture.server.fleet import sessions
from suture.server.fleet.catalog import Catalog
from suture.server.fleet.context import Fleet
from suture.server.fleet.sessions import LIFETIME
from tests.support.agent import name
from tests.support.dashboard import Client, text
from tests.support.repo import make_bundle
from tests.support.server import ADMIN, admin, simulated_fleet


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = simulated_fleet(tmp_path)
    yield srv
    srv.stop()


def test_pages_need_a_login(server: Server) -> None:
    c = Client(server)
    for path in ["/", "/cves", "/hosts/host-00", "/rollouts/stable"]:
        status, headers, _ = c.get(path)
        assert status == 303
        assert headers["Location"].startswith("/login?next=")
    _, headers, _ = c.get("/hosts?status=failed")
    assert headers["Location"] == "/login?" + urlencode({"next": "/hosts?status=failed"})
    status, _, body = c.get("/login")
    assert status == 200 and 'type="password"' in body
    # The stylesheet is public (the login page uses it) and comes from the server itself.
    status, headers, css = c.get("/ui/dashboard.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css") and "body" in css


def test_login_sets_a_strict_session_cookie_and_logout_ends_it(server: Server) -> None:
    c = Client(server)
    status, _, body = c.login("sat_wrong")
    assert status == 401 and "not the admin token" in body and not c.cookie
    status, headers, _ = c.login()
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {p.strip() for p in cookie.split(";")}
    status, headers, body = c.get("/")
    assert status == 200
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    # A login with ?next= goes back there, but never off the server.
    _, headers, _ = c.post("/login", {"token": ADMIN, "next": "//evil.example/"})
    assert headers["Location"] == "/"
    status, headers, _ = c.post("/logout", {"csrf": c.csrf()})
    assert status == 303 and headers["Location"] == "/login"
    assert c.get("/")[0] == 303  # the old cookie no longer works


def test_overview_kernels_cves_and_hosts_show_the_fleet(server: Server) -> None:
    c = Client(server)
    c.login()
    overview = text(c.get("/")[2])
    assert "4 hosts" in overview and "3 patched" not in overview  # host-00 failed
    assert "2 patched" in overview and "2 failed" in overview
    assert "host-00" in overview and "injected" in overview  # its failure
    assert "stable rolling out 2" in overview
    kernels = text(c.get("/kernels")[2])
    assert "CVE-2026-1001" in kernels and "CVE-2026-1002" in kernels
    cves = text(c.get("/cves")[2])
    # CVE-2026-1002 (level 2): fixed on host-01 and -02, none partly; host-00 failed it;
    # evil-1: no fix.
    assert "CVE-2026-1002 1 2 0 1 1" in cves
    cve = text(c.get("/cves/CVE-2026-1002")[2])
    assert "Exposed hosts (1) Host Hostname" in cve and "host-00" in cve
    status, _, body = c.get("/hosts?status=failed")
    assert status == 200 and "Hosts (2)" in text(body)
    assert "Hosts (1)" in text(c.get("/hosts?q=host-01")[2])
    detail = text(c.get("/hosts/host-00")[2])
    assert "History" in detail and "injected" in detail
    assert c.get("/hosts/nobody")[0] == 404


def test_levels_say_whether_they_were_tested(server: Server, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    bundle = make_bundle(tmp_path, 3, name=name(3), test=None)
    publish.publish(repo, bundle, untested=True)
    c = Client(server)
    c.login()
    kernels = text(c.get("/kernels")[2])
    # Level, name, CVEs, published, lab test, hosts.
    assert re.search(rf"2 {name(2)} CVE-2026-1002 \S+ tested \d", kernels)
    assert re.search(rf"3 {name(3)} CVE-2026-1003 \S+ not tested \d", kernels)
    assert "not tested" in text(c.get("/rollouts/stable")[2])
    assert "not tested" in text(c.get("/hosts/host-01")[2])  # level 3 is not live on it
    levels = admin(server, "GET", "/api/v1/levels")["levels"]
    assert [(lv["level"], lv["tested"]) for lv in levels] == [
        (1, "passed"),
        (2, "passed"),
        (3, "untested"),
    ]


def test_markup_from_a_report_is_escaped(server: Server) -> None:
    c = Client(server)
    c.login()
    for path in ["/", "/hosts", "/hosts/evil-1", "/cves/CVE-2026-1001"]:
        status, _, body = c.get(path)
        assert status == 200, path
        assert "<script" not in body, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body, path


def halted_level(server: Server) -> int | None:
    level: int | None = admin(server, "GET", "/api/v1/rollouts/stable")["policy"]["halted_level"]
    return level


def test_a_rollout_action_needs_the_csrf_token(server: Server) -> None:
    c = Client(server)
    c.login()
    fields = {"level": "2", "reason": "bad", "confirm": "yes"}
    status, _, body = c.post("/rollouts/stable/halt", {**fields, "csrf": "forged"})
    assert status == 403 and "CSRF" in body
    status, _, _ = c.post("/rollouts/stable/halt", fields)
    assert status == 403
    assert halted_level(server) is None
    # Without a session at all: back to the login page, nothing done.
    status, headers, _ = Client(server).post("/rollouts/stable/halt", fields)
    assert status == 303 and headers["Location"] == "/login"
    assert halted_level(server) is None


def test_a_rollout_action_asks_for_confirmation_then_does_it(server: Server) -> None:
    c = Client(server)
    c.login()
    csrf = c.csrf("/rollouts/stable")
    fields = {"csrf": csrf, "level": "2", "reason": "canary <b>panics</b>"}
    status, _, body = c.post("/rollouts/stable/halt", fields)
    assert status == 200 and "Confirm: halt on stable" in body
    assert 'name="confirm" value="yes"' in body and "&lt;b&gt;panics" in body
    assert halted_level(server) is None  # asked, not done
    status, headers, _ = c.post("/rollouts/stable/halt", {**fields, "confirm": "yes"})
    assert status == 303 and headers["Location"] == "/rollouts/stable"
    policy = admin(server, "GET", "/api/v1/rollouts/stable")["policy"]
    assert (policy["halted_level"], policy["halt_reason"]) == (2, "canary <b>panics</b>")
    page = text(c.get("/rollouts/stable")[2])
    assert "Done: level 2 on stable is halted." in page and "halted at level 2" in page
    assert "Done:" not in text(c.get("/rollouts/stable")[2])  # the message is shown once
    # Resume and unroll go the same way.
    c.post("/rollouts/stable/resume", {"csrf": csrf, "confirm": "yes"})
    assert halted_level(server) is None
    c.post("/rollouts/stable/unroll", {"csrf": csrf, "level": "1", "confirm": "yes"})
    assert admin(server, "GET", "/api/v1/rollouts/stable")["policy"]["unroll_to"] == 1
    # A bad level is refused with a message, nothing done.
    status, _, _ = c.post("/rollouts/stable/promote", {"csrf": csrf, "level": "x"})
    assert status == 303 and "Give a level" in text(c.get("/rollouts/stable")[2])
    assert c.post("/rollouts/nowhere/halt", {"csrf": csrf, "level": "1"})[0] == 404


def test_sessions_expire(tmp_path: Path) -> None:
    now = [1000.0]
    store = open_store(DbUrl("sqlite", str(tmp_path / "s.db")))
    fleet = Fleet(store, Layout(tmp_path), Catalog(Layout(tmp_path)), clock=lambda: now[0])
    try:
        sid = sessions.create(fleet)
        found = sessions.get(fleet, sid)
        assert found is not None and sessions.get(fleet, "other") is None
        sessions.flash(fleet, found, "once")
        assert sessions.get(fleet, sid).flash == "once"  # type: ignore[union-attr]
        assert sessions.get(fleet, sid).flash == ""  # type: ignore[union-attr]
        now[0] += LIFETIME
        assert sessions.get(fleet, sid) is None
        sid = sessions.create(fleet)
        sessions.end(fleet, sid)
        assert sessions.get(fleet, sid) is None
    finally:
        store.close()
