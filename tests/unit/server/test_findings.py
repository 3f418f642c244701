"""The findings of the attack review (../shared/security-repro/), one test each, on a real server.

Each test failed on the server before the fix (http.server, a registration key
that took any host id, halts per channel, ...): the script of the review that
showed the finding is named in each test's docstring.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from suture.repo import create, publish
from suture.server import Server, open_server
from suture.server.config import Limits, ServerConfig
from tests.support.repo import BUILD_A, BUILD_B, RELEASE, make_bundle

ADMIN = "sat_findings-test-admin-token-0123456789"


class Clock:
    """Real time moved by ``offset`` seconds (a test's way to be before or after a publish)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Level 1 published for builds A and B."""
    root = tmp_path_factory.mktemp("findings") / "repo"
    create.init(root)
    for build in (BUILD_A, BUILD_B):
        publish.publish(root, make_bundle(root.parent, 1, build_id=build), "stable")
    return root


Start = Callable[..., Server]


@pytest.fixture
def start(repo: Path, tmp_path: Path) -> Iterator[Start]:
    """Start a server on the module's repository: ``start(limits=..., clock=..., db=...)``."""
    servers: list[Server] = []

    def run(
        *, limits: Limits | None = None, clock: Clock | None = None, db: str = "", log: Any = None
    ) -> Server:
        config = ServerConfig(
            repo=repo, listen="127.0.0.1:0", db=db or f"sqlite:///{tmp_path}/s.db"
        )
        if limits is not None:
            config = replace(config, limits=limits)
        srv = open_server(
            config=config,
            admin_token=ADMIN,
            log=log if log is not None else [].append,
            clock=clock or time.time,
        )
        srv.start()
        servers.append(srv)
        return srv

    yield run
    for srv in servers:
        srv.stop()


def call(
    srv: Server, method: str, path: str, body: Any = None, token: str = ADMIN
) -> tuple[int, Any, dict[str, str]]:
    conn = http.client.HTTPConnection(srv.url.removeprefix("http://"), timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body)
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        answer = (
            json.loads(raw)
            if resp.getheader("Content-Type", "").startswith("application/json")
            else raw
        )
        return resp.status, answer, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def key(srv: Server, **options: Any) -> dict[str, Any]:
    status, answer, _ = call(srv, "POST", "/api/v1/registration-keys", {"tags": ["t"], **options})
    assert status == 200, answer
    return dict(answer)


def enrol(srv: Server, secret: str, host_id: str, token: str = "") -> tuple[int, Any]:
    body = {"registration_key": secret, "host_id": host_id}
    status, answer, _ = call(srv, "POST", "/api/v1/register", body, token=token)
    return status, answer


def checkin(
    srv: Server,
    token: str,
    host_id: str,
    *,
    state: str = "unpatched",
    level: int = 0,
    attempted: int = 0,
    build: str = BUILD_A,
) -> tuple[int, Any]:
    body = {
        "format": 2,
        "host_id": host_id,
        "hostname": host_id,
        "kernel": {"release": RELEASE, "build_id": build},
        "level": level,
        "state": state,
        "agent_version": "0.1.0",
        "patches": [],
        "attempted_level": attempted,
    }
    status, answer, _ = call(srv, "POST", "/api/v1/checkin", body, token=token)
    return status, answer


# --- 01: enrolment takes no host over -------------------------------------------------------


def test_01_a_registration_key_does_not_take_an_enrolled_host_id_over(start: Start) -> None:
    """security-repro 01: any key re-enrolled web-1, and killed the real host's token."""
    srv = start()
    k1, k2 = key(srv), key(srv)
    status, real = enrol(srv, k1["registration_key"], "web-1")
    assert status == 200
    token = real["host_token"]
    assert checkin(srv, token, "web-1")[0] == 200
    for secret in (k2["registration_key"], k1["registration_key"]):  # another key, its own key
        status, answer = enrol(srv, secret, "web-1")
        assert (status, answer["error"]) == (409, "taken")
        assert "host_token" not in answer
    assert checkin(srv, token, "web-1")[0] == 200  # the real host's token still works
    # The host itself rotates its token by showing the current one.
    status, rotated = enrol(srv, k1["registration_key"], "web-1", token=token)
    assert status == 200
    assert checkin(srv, token, "web-1")[0] == 401
    assert checkin(srv, rotated["host_token"], "web-1")[0] == 200


def test_01_revoking_a_key_can_revoke_the_tokens_of_its_hosts(start: Start) -> None:
    """security-repro 01: revoking a key left every token it had issued working."""
    srv = start()
    kept, cut = key(srv), key(srv)
    _, a = enrol(srv, kept["registration_key"], "a")
    _, b = enrol(srv, cut["registration_key"], "b")
    assert call(srv, "DELETE", f"/api/v1/registration-keys/{kept['key_id']}")[0] == 200
    status, answer, _ = call(
        srv, "DELETE", f"/api/v1/registration-keys/{cut['key_id']}?revoke_hosts=true"
    )
    assert (status, answer["hosts_revoked"]) == (200, 1)
    assert checkin(srv, a["host_token"], "a")[0] == 200  # revoked key, host kept (as asked)
    assert checkin(srv, b["host_token"], "b")[0] == 401
    assert enrol(srv, cut["registration_key"], "c")[0] == 403


def test_01_a_host_can_be_revoked_and_deleted(start: Start) -> None:
    """security-repro 01: there was no way to revoke one host's token or delete a host."""
    srv = start()
    k = key(srv)["registration_key"]
    _, h = enrol(srv, k, "h")
    assert checkin(srv, h["host_token"], "h")[0] == 200
    assert call(srv, "POST", "/api/v1/hosts/h/revoke", {})[0] == 200
    assert checkin(srv, h["host_token"], "h")[0] == 401
    status, answer = enrol(srv, k, "h")  # revoked without allow_reenrol: the id is blocked
    assert (status, answer["error"]) == (403, "blocked")
    assert call(srv, "GET", "/api/v1/hosts/h")[1]["host"]["token"] == "revoked"  # noqa: S105
    body = {"allow_reenrol": True}
    assert call(srv, "POST", "/api/v1/hosts/h/revoke", body)[0] == 200
    status, again = enrol(srv, k, "h")  # a reinstalled host
    assert status == 200
    assert checkin(srv, again["host_token"], "h")[0] == 200
    assert call(srv, "DELETE", "/api/v1/hosts/h")[0] == 200
    assert call(srv, "GET", "/api/v1/hosts/h")[0] == 404
    assert checkin(srv, again["host_token"], "h")[0] == 401
    assert enrol(srv, k, "h")[0] == 200  # forgotten: it may enrol afresh
    assert call(srv, "DELETE", "/api/v1/hosts/nobody")[0] == 404


def test_01_a_key_has_a_host_limit_and_an_expiry(start: Start) -> None:
    """security-repro 02: one key enrolled any number of hosts, forever."""
    clock = Clock()
    srv = start(clock=clock)
    limited = key(srv, max_hosts=2)["registration_key"]
    assert [enrol(srv, limited, f"h{i}")[0] for i in range(3)] == [200, 200, 403]
    assert enrol(srv, limited, "h9")[1]["error"] == "key_full"
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    expiring = key(srv, expires_at=soon)
    assert enrol(srv, expiring["registration_key"], "e1")[0] == 200
    clock.offset = 7200
    status, answer = enrol(srv, expiring["registration_key"], "e2")
    assert (status, answer["error"]) == (403, "key_expired")
    listed = call(srv, "GET", "/api/v1/registration-keys")[1]["keys"]
    found = {k["key_id"]: k for k in listed}[expiring["key_id"]]
    assert (found["expired"], found["enrolled"]) == (True, 1)


# --- 02: an automatic halt needs credible hosts, and holds one build ---------------------------


def test_02_hosts_enrolled_after_a_level_cannot_halt_it(start: Start) -> None:
    """security-repro 02: five fresh hosts from one key halted level 1 for every build."""
    clock = Clock()
    clock.offset = 10  # every host here is seen after level 1 was published
    srv = start(clock=clock)
    k = key(srv)["registration_key"]
    tokens = {h: enrol(srv, k, h)[1]["host_token"] for h in ("real-a", "real-b")}
    assert checkin(srv, tokens["real-a"], "real-a")[1]["directive"]["max_level"] == 1
    for i in range(5):
        _, fake = enrol(srv, k, f"fake-{i}")
        checkin(srv, fake["host_token"], f"fake-{i}", state="failed", attempted=1)
    assert checkin(srv, tokens["real-a"], "real-a")[1]["directive"]["max_level"] == 1
    status, answer = checkin(srv, tokens["real-b"], "real-b", build=BUILD_B)
    assert (status, answer["directive"]["max_level"]) == (200, 1)
    policy = call(srv, "GET", "/api/v1/rollouts/stable")[1]["policy"]
    assert (policy["halted_level"], policy["build_halts"]) == (None, {})


def test_02_credible_failures_halt_their_build_only(start: Start, repo: Path) -> None:
    """security-repro 02: a halt of level N held level N of every build of the channel."""
    clock = Clock()
    srv = start(clock=clock)
    k = key(srv)["registration_key"]
    hosts = [f"a{i}" for i in range(5)] + ["b0"]
    tokens = {h: enrol(srv, k, h)[1]["host_token"] for h in hosts}
    clock.offset = -10  # on their builds before level 2 is published
    for h in hosts:
        checkin(
            srv, tokens[h], h, state="patched", level=1, build=BUILD_B if h == "b0" else BUILD_A
        )
    for build in (BUILD_A, BUILD_B):
        publish.publish(repo, make_bundle(repo.parent, 2, build_id=build), "stable")
    clock.offset = 10
    for h in hosts[:5]:
        checkin(srv, tokens[h], h, state="failed", level=1, attempted=2)
    policy = call(srv, "GET", "/api/v1/rollouts/stable")[1]["policy"]
    assert policy["halted_level"] is None
    assert policy["build_halts"][f"{RELEASE}/{BUILD_A}"]["level"] == 2
    assert (
        checkin(srv, tokens["a0"], "a0", state="patched", level=1)[1]["directive"]["max_level"] == 1
    )
    status, answer = checkin(srv, tokens["b0"], "b0", state="patched", level=1, build=BUILD_B)
    assert (status, answer["directive"]["max_level"]) == (200, 2)  # build B goes on
    # Resuming lifts it, and the level is not halted again by itself.
    assert call(srv, "POST", "/api/v1/rollouts/stable/resume", {})[0] == 200
    checkin(srv, tokens["a1"], "a1", state="failed", level=1, attempted=2)
    assert (
        checkin(srv, tokens["a0"], "a0", state="patched", level=1)[1]["directive"]["max_level"] == 2
    )


# --- 03: the login redirect and the cookie ---------------------------------------------------


def login(srv: Server, next_path: str) -> dict[str, str]:
    conn = http.client.HTTPConnection(srv.url.removeprefix("http://"), timeout=10)
    conn.request(
        "POST",
        "/login",
        body=urlencode({"token": ADMIN, "next": next_path}),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 303
    return {k.lower(): v for k, v in resp.getheaders()}


def test_03_login_next_stays_on_the_server_and_injects_nothing(start: Start) -> None:
    """security-repro 03: CR LF in next went into Location raw; /<TAB>/evil.example left."""
    srv = start()
    assert login(srv, "/hosts?status=failed")["location"] == "/hosts?status=failed"
    crlf = login(srv, "/x\r\nSet-Cookie: injected=1; Path=/\r\nX-Injected: yes")
    assert crlf["location"] == "/" and "x-injected" not in crlf
    assert "injected" not in crlf.get("set-cookie", "")
    for sneaky in ("/\t/evil.example/phish", "//evil.example", "/\\evil.example", "http://e.x/"):
        assert login(srv, sneaky)["location"] == "/", sneaky
    assert "Secure" not in crlf["set-cookie"]  # plain HTTP here; under TLS: test_server_tls


# --- 04: one request, one answer ---------------------------------------------------------------


def raw(srv: Server, data: bytes, wait: float = 1.0) -> bytes:
    host, port = srv.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.settimeout(wait)
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return out


SMUGGLED = b"GET /api/v1/vex-key HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    "probe",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED)
        + SMUGGLED,  # CL.0: a GET's body read as the next request
        b"POST /api/v1/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % len(SMUGGLED)
        + SMUGGLED
        + b"\r\n0\r\n\r\n",  # TE.CL
        b"POST /api/v1/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\nContent-Length: 60\r\n\r\n{}" + SMUGGLED,  # CL.CL
    ],
    ids=["CL.0", "TE.CL", "CL.CL"],
)
def test_04_a_request_gets_one_answer_never_the_smuggled_one(start: Start, probe: bytes) -> None:
    """security-repro 04: a GET body, TE next to CL, two lengths: the next request smuggled."""
    srv = start()
    out = raw(srv, probe)
    assert out.count(b"HTTP/1.1 ") == 1, out
    assert b"public_key" not in out


@pytest.mark.parametrize("length", [b"\xb2", b"99999999999999999999", b"-1", b"1e3"])
def test_14_a_content_length_that_is_no_number_is_answered(start: Start, length: bytes) -> None:
    """security-repro 04/14: "²" passed isdigit() and got no answer; 10^20 overflowed."""
    srv = start()
    out = raw(
        srv,
        b"POST /api/v1/register HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n{}",
        3,
    )
    assert out.startswith((b"HTTP/1.1 400", b"HTTP/1.1 413")), out


# --- 05: slowloris -----------------------------------------------------------------------------


def test_05_half_sent_requests_neither_lock_others_out_nor_stay(start: Start) -> None:
    """security-repro 05: 1,100 half-sent requests locked everyone out; the timeout was per read."""
    srv = start(limits=Limits(max_connections=20, head_timeout=2.0))
    host, port = srv.url.removeprefix("http://").split(":")
    slow = []
    for _ in range(60):  # three times the cap, each a request head never finished
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        slow.append(s)
    try:
        started = time.monotonic()
        conn = http.client.HTTPConnection(f"{host}:{port}", timeout=5)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200  # a whole request gets in at once
        conn.close()
        assert time.monotonic() - started < 2.0
        # A client that trickles a header line now and then is cut at the head's deadline.
        trickler = socket.create_connection((host, int(port)), timeout=5)
        trickler.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        answer = b""
        trickler.settimeout(0.5)
        while time.monotonic() - started < 6:
            try:
                answer = trickler.recv(100)
                break
            except TimeoutError:
                trickler.sendall(b"X-a: b\r\n")
        assert answer.startswith(b"HTTP/1.1 408") or answer == b""
        assert time.monotonic() - started < 4
        trickler.close()
    finally:
        for s in slow:
            s.close()


def test_05_a_huge_request_head_is_refused(start: Start) -> None:
    """A head may not grow without bound (uvicorn's httptools parser sets no limit)."""
    srv = start(limits=Limits(max_head=4096))
    out = raw(srv, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-a: " + b"b" * 8000 + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431"), out


# --- 06: one host cannot grow the history or hog the server ------------------------------------


def test_06_a_flapping_host_is_limited_and_its_history_bounded(start: Start) -> None:
    """security-repro 06: one host token wrote 5,965 history rows in 10 s."""
    srv = start(limits=Limits(checkin_burst=20, checkin_per_s=0.1))
    k = key(srv)["registration_key"]
    token = enrol(srv, k, "flap")[1]["host_token"]
    answers = [
        checkin(srv, token, "flap", state="failed", attempted=n % 2 + 1)[0] for n in range(30)
    ]
    assert answers == [200] * 20 + [429] * 10
    status, _, headers = call(
        srv,
        "POST",
        "/api/v1/checkin",
        {
            "format": 1,
            "host_id": "flap",
            "hostname": "flap",
            "kernel": {"release": RELEASE, "build_id": BUILD_A},
            "level": 0,
            "state": "failed",
            "agent_version": "0.1.0",
            "patches": [],
        },
        token=token,
    )
    assert status == 429 and int(headers["retry-after"]) >= 1
    history = call(srv, "GET", "/api/v1/hosts/flap/events?limit=1000")[1]["events"]
    assert len(history) == 20  # one per change; at most events_per_host (100) are ever kept


# --- 14: integers the dashboard is given -------------------------------------------------------


def test_14_dashboard_integers_are_refused_not_500(start: Start) -> None:
    """security-repro 14: level=² and 10^20 answered 500 on /hosts, promote and unroll."""
    srv = start()
    cookie = login(srv, "/")["set-cookie"].split(";")[0]
    netloc = srv.url.removeprefix("http://")

    def page(method: str, path: str, body: str = "") -> tuple[int, str]:
        conn = http.client.HTTPConnection(netloc, timeout=10)
        headers = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        text = resp.read().decode()
        conn.close()
        return resp.status, text

    csrf = re.search(r'name="csrf" value="([^"]+)"', page("GET", "/rollouts/stable")[1])
    assert csrf is not None
    for path in ("/hosts?level=%C2%B2", "/hosts?level=99999999999999999999"):
        status, text = page("GET", path)
        assert status == 200 and "level is not a whole number" in text, path
    for action, level in (("promote", "%C2%B2"), ("unroll", "99999999999999999999")):
        status, _ = page(
            "POST", f"/rollouts/stable/{action}", f"csrf={csrf.group(1)}&level={level}"
        )
        assert status == 303
    assert "Give a level" in page("GET", "/rollouts/stable")[1]


# --- 15: two servers on one SQLite file --------------------------------------------------------


def test_15_two_servers_on_one_sqlite_file_take_every_check_in(
    start: Start, tmp_path: Path
) -> None:
    """security-repro 15: a deferred BEGIN failed at once with "database is locked" (503)."""
    db = f"sqlite:///{tmp_path}/shared.db"
    a, b = start(db=db), start(db=db)
    k = key(a)["registration_key"]
    tokens = {f"h{i}": enrol(a, k, f"h{i}")[1]["host_token"] for i in range(8)}
    codes: list[int] = []
    lock = threading.Lock()

    def hammer(srv: Server, host: str) -> None:
        deadline = time.monotonic() + 2
        n = 0
        while time.monotonic() < deadline:
            n += 1
            status = checkin(srv, tokens[host], host, state="failed", attempted=n % 3 + 1)[0]
            with lock:
                codes.append(status)

    threads = [
        threading.Thread(target=hammer, args=(srv, host)) for host in tokens for srv in (a, b)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes and set(codes) == {200}, {c: codes.count(c) for c in set(codes)}


# --- the rest of the table: rate limits, tokens, logs ------------------------------------------


def test_failed_logins_are_limited_per_address(start: Start) -> None:
    """There was no limit on logins: a guesser could try tokens as fast as the server answered."""
    srv = start(limits=Limits(login_failures=3))
    netloc = srv.url.removeprefix("http://")

    def attempt(token: str) -> int:
        conn = http.client.HTTPConnection(netloc, timeout=10)
        conn.request(
            "POST",
            "/login",
            body=f"token={token}&next=/",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        status = conn.getresponse().status
        conn.close()
        return status

    assert [attempt("sat_wrong") for _ in range(4)] == [401, 401, 401, 429]
    assert attempt(ADMIN) == 429  # the right token too, until the window ends: nothing to learn


def test_wrong_admin_tokens_are_limited_per_address(start: Start) -> None:
    """There was no API rate limit on the admin token."""
    srv = start(limits=Limits(auth_failures=3))
    wrong = "sat_" + "w" * 40
    codes = [call(srv, "GET", "/api/v1/summary", token=wrong)[0] for _ in range(4)]
    assert codes == [401, 401, 401, 429]
    assert call(srv, "GET", "/api/v1/summary")[0] == 429
    assert call(srv, "GET", "/api/v1/summary", token="")[0] == 401  # no token: no guess


def test_log_lines_carry_no_raw_control_characters(start: Start) -> None:
    """Raw ESC bytes from a request path went into the log."""
    log: list[str] = []
    srv = start(log=log.append)
    raw(srv, b"GET /%1b[31mred%07 HTTP/1.1\r\nHost: x\r\nX-Request-Id: probe-1\r\n\r\n")
    time.sleep(0.2)
    lines = [line for line in log if "probe-1" in line]
    assert lines, log
    assert all("\x1b" not in line and "\x07" not in line for line in log)
    assert "\\x1b[31mred\\x07" in lines[0]
