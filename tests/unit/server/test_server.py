"""suture.server over real HTTP: a real repository and a SQLite database, on loopback, port 0."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from suture.cli.main import main
from suture.errors import ListenError, NotARepoError
from suture.repo import create, publish
from suture.repo.layout import Layout
from suture.server import Server, dashboard, open_server, openapi
from suture.server.http import app
from suture.server.http.static_files import IMMUTABLE, NO_CACHE
from tests.support.contract import REFUSED
from tests.support.repo import BUILD_A, RELEASE, make_bundle
from tests.support.server import CHECKIN, request


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served") / "repo"
    create.init(root)
    publish.publish(root, make_bundle(root.parent, 1), "stable")
    (root.parent / "secret.txt").write_text("outside the repository\n")
    (root / "targets" / "escape").symlink_to(root.parent / "secret.txt")
    return root


ADMIN = "sat_test-admin-token-0123456789"
TOKENS: dict[str, str] = {}  # server URL -> the host token of CHECKIN's host


@pytest.fixture
def server(repo: Path, tmp_path: Path) -> Iterator[Server]:
    log: list[str] = []
    srv = open_server(
        repo,
        listen="127.0.0.1:0",
        db=f"sqlite:///{tmp_path}/s.db",
        log=log.append,
        admin_token=ADMIN,
    )
    srv.start(poll_interval=0.01)
    TOKENS[srv.url] = enrol(srv, CHECKIN["host_id"])
    yield srv
    srv.stop()


def enrol(server: Server, host_id: str, tags: tuple[str, ...] = ()) -> str:
    """A registration key from the admin API, then the host's own token."""
    body = json.dumps({"tags": list(tags)}).encode()
    status, _, answer = request(
        server, "/api/v1/registration-keys", method="POST", body=body, token=ADMIN
    )
    assert status == 200, answer
    key = json.loads(answer)["registration_key"]
    body = json.dumps({"format": 1, "registration_key": key, "host_id": host_id}).encode()
    status, _, answer = request(server, "/api/v1/register", method="POST", body=body)
    assert status == 200, answer
    token: str = json.loads(answer)["host_token"]
    return token


def post(server: Server, data: object, token: str | None = None) -> tuple[int, dict[str, Any]]:
    """A check-in, with CHECKIN's host token unless another is given."""
    status, _, body = request(
        server,
        "/api/v1/checkin",
        method="POST",
        body=json.dumps(data).encode(),
        token=TOKENS[server.url] if token is None else token,
    )
    return status, json.loads(body)


def hosts(server: Server) -> list[dict[str, Any]]:
    status, _, body = request(server, "/api/v1/hosts", token=ADMIN)
    assert status == 200, body
    found: list[dict[str, Any]] = json.loads(body)["hosts"]
    return found


# --- static files ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cache"),
    [
        ("timestamp.json", NO_CACHE),
        ("root.json", NO_CACHE),
        ("1.root.json", IMMUTABLE),
        ("1.snapshot.json", IMMUTABLE),
    ],
)
def test_metadata_served_with_cache_headers(
    server: Server, repo: Path, name: str, cache: str
) -> None:
    path = Layout(repo).metadata / name
    status, headers, body = request(server, f"/metadata/{name}")
    assert status == 200
    assert body == path.read_bytes()
    assert headers["Content-Length"] == str(len(body))
    assert headers["Cache-Control"] == cache
    assert headers["Content-Type"] == "application/json"


def test_targets_hash_prefixed_are_immutable(server: Server, repo: Path) -> None:
    files = [p for p in (repo / "targets").rglob("*") if p.is_file() and p.name != "escape"]
    assert files
    for path in files:
        rel = path.relative_to(repo / "targets").as_posix()
        status, headers, body = request(server, f"/targets/{rel}")
        assert status == 200
        assert body == path.read_bytes()
        assert headers["Cache-Control"] == IMMUTABLE


def test_head_has_length_and_no_body(server: Server, repo: Path) -> None:
    size = (Layout(repo).metadata / "timestamp.json").stat().st_size
    status, headers, body = request(server, "/metadata/timestamp.json", method="HEAD")
    assert (status, headers["Content-Length"], body) == (200, str(size), b"")


@pytest.mark.parametrize(
    "path",
    [
        "/metadata/../keys/timestamp.json",
        "/metadata/..%2Fkeys%2Ftimestamp.json",
        "/targets/../../secret.txt",
        "/targets/%2e%2e/%2e%2e/secret.txt",
        "/targets/a/./b",
        "/targets/.hidden",
        "/targets/a%5C..%5Cb",
        "/targets/a%00b",
        "/metadata/x/y.json",
    ],
)
def test_traversal_refused(server: Server, path: str) -> None:
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=5)
    conn.request("GET", path)  # raw: urllib would normalise some of these
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status in (400, 404)
    assert b"outside the repository" not in body
    assert b"private" not in body


def test_symlink_out_of_the_repository_not_followed(server: Server) -> None:
    status, _, body = request(server, "/targets/escape")
    assert status in (400, 404)
    assert b"outside" not in body


def test_missing_file_is_404_and_keys_unreachable(server: Server) -> None:
    assert request(server, "/metadata/99.root.json")[0] == 404
    assert request(server, "/keys/timestamp")[0] == 404
    assert request(server, "/repo.json")[0] == 404


# --- the API ----------------------------------------------------------------------


def test_checkin_stored_and_listed(server: Server) -> None:
    status, answer = post(server, CHECKIN)
    assert status == 200
    assert answer["format"] == 1
    assert answer["ok"] is True
    assert answer["server_time"].endswith("Z")
    assert answer["directive"] == {"max_level": 1, "unroll": False}  # level 1 is published
    assert post(server, {**CHECKIN, "level": 3, "state": "failed", "last_error": "x"})[0] == 200
    other = enrol(server, "other", ("env:prod",))
    assert post(server, {**CHECKIN, "host_id": "other", "hostname": "db-1"}, other)[0] == 200

    fleet = hosts(server)
    assert [h["host_id"] for h in fleet] == ["4c4c4544003510", "other"]
    assert fleet[1]["tags"] == ["env:prod"]
    host = fleet[0]
    assert host["level"] == 3
    assert host["state"] == "failed"
    assert host["last_error"] == "x"
    assert host["kernel"] == {"release": RELEASE, "build_id": BUILD_A}
    assert host["patches"] == ["suture_fix_1"]
    assert host["address"] == "127.0.0.1"
    assert host["first_seen"] <= host["last_seen"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"format": 4}, "format"),
        *[(change, field) for change, field in REFUSED if field.startswith("userspace")],
        ({"format": 1, "uptime": 5}, "uptime"),  # a format-2 field in format 1
        ({"format": 2, "uptime": -1}, "uptime"),
        ({"format": 2, "functions": ["no-object"]}, "functions[0]"),
        ({"format": 2, "channel": "Stable!"}, "channel"),
        ({"format": 2, "attempted_level": "3"}, "attempted_level"),
        ({"format": "1"}, "format"),
        ({"format": True}, "format"),
        ({"level": "2"}, "level"),
        ({"level": -1}, "level"),
        ({"level": True}, "level"),
        ({"state": "happy"}, "state"),
        ({"host_id": ""}, "host_id"),
        ({"host_id": "a/b"}, "host_id"),
        ({"hostname": "x" * 300}, "hostname"),
        ({"kernel": {"release": RELEASE}}, "kernel.build_id"),
        ({"kernel": {"release": RELEASE, "build_id": "XYZ"}}, "kernel.build_id"),
        ({"kernel": {"release": "../..", "build_id": BUILD_A}}, "kernel.release"),
        ({"kernel": "6.1"}, "kernel"),
        ({"patches": "suture_fix_1"}, "patches"),
        ({"patches": ["a"] * 65}, "patches"),
        ({"patches": ["bad name"]}, "patches[0]"),
        ({"last_error": 5}, "last_error"),
        ({"last_error": "x" * 5000}, "last_error"),
        ({"agent_version": "0.1\n"}, "agent_version"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_checkin_refused(server: Server, change: dict[str, Any], field: str) -> None:
    status, answer = post(server, {**CHECKIN, **change})
    assert status == 400
    assert answer["ok"] is False
    assert answer["error"] == "CheckinError"
    assert answer["field"] == field
    assert hosts(server) == []


def test_a_host_without_a_build_id_checks_in(server: Server) -> None:
    unsupported = {**CHECKIN, "kernel": {"release": RELEASE, "build_id": ""}}
    assert post(server, {**unsupported, "state": "unsupported", "level": 0})[0] == 200


def test_missing_field_and_bodies_that_are_not_checkins(server: Server) -> None:
    without = {k: v for k, v in CHECKIN.items() if k != "hostname"}
    assert post(server, without) == (400, post(server, without)[1])
    assert post(server, without)[1]["field"] == "hostname"
    for body in (b"{", b"[]", b"\xff", b"null"):
        token = TOKENS[server.url]
        status, _, answer = request(
            server, "/api/v1/checkin", method="POST", body=body, token=token
        )
        assert status == 400
        assert json.loads(answer)["ok"] is False


def test_checkin_wrong_media_type_size_and_method(server: Server) -> None:
    body = json.dumps(CHECKIN).encode()
    token = TOKENS[server.url]
    plain = request(
        server, "/api/v1/checkin", method="POST", body=body, ctype="text/plain", token=token
    )
    assert plain[0] == 415
    big = json.dumps({**CHECKIN, "last_error": "x" * 70_000}).encode()
    assert request(server, "/api/v1/checkin", method="POST", body=big, token=token)[0] == 413
    assert request(server, "/api/v1/checkin")[0] == 405
    assert request(server, "/api/v1/hosts", method="POST", body=b"{}", token=ADMIN)[0] == 405
    assert request(server, "/nowhere")[0] == 404


def test_healthz_and_openapi(server: Server) -> None:
    status, _, body = request(server, "/healthz")
    health = json.loads(body)
    assert (status, health["format"], health["ok"]) == (200, 1, True)
    assert health["checks"]["database"] == {"ok": True}
    assert health["checks"]["repository"]["ok"] is True
    assert set(health["checks"]["repository"]["expires"]) == {
        "root",
        "targets",
        "snapshot",
        "timestamp",
    }
    status, _, body = request(server, "/openapi.json")
    doc = json.loads(body)
    assert status == 200
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) >= {
        "/api/v1/checkin",
        "/api/v1/hosts",
        "/healthz",
        "/openapi.json",
        "/metadata/{path}",
        "/targets/{path}",
    }
    schemas = doc["components"]["schemas"]
    assert set(schemas["Checkin1"]["properties"]) == set(CHECKIN)
    fleet_fields = {"channel", "uptime", "functions", "attempted_level"}
    assert set(schemas["Checkin2"]["properties"]) == set(CHECKIN) | fleet_fields
    assert set(schemas["Checkin"]["properties"]) == set(CHECKIN) | fleet_fields | {"userspace"}
    assert doc == openapi.document()


def test_openapi_describes_every_route() -> None:
    doc = openapi.document()
    checked = 0
    for e in app.api_endpoints():
        assert e.doc is not None, e.path  # every API route is in the document
        pattern = re.sub(r"\{(\w+):\w+\}", r"{\1}", e.path)
        op = doc["paths"][pattern][e.method.lower()]
        assert op["security"] == ([] if e.auth == "public" else [{e.auth.value: []}]), pattern
        checked += 1
    assert checked >= 25
    # The dashboard's HTML pages are not in it.
    assert not any(e.doc for e in dashboard.ENDPOINTS)


def test_keep_alive_serves_several_requests(server: Server) -> None:
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=5)
    for _ in range(3):
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
    conn.request(
        "POST",
        "/api/v1/checkin",
        body=json.dumps(CHECKIN),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {TOKENS[server.url]}",
        },
    )
    assert conn.getresponse().status == 200
    conn.close()


# --- starting ---------------------------------------------------------------------


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(NotARepoError):
        open_server(tmp_path, listen="127.0.0.1:0", db=f"sqlite:///{tmp_path}/s.db")


def test_address_in_use(server: Server, repo: Path, tmp_path: Path) -> None:
    taken = server.url.removeprefix("http://")
    with pytest.raises(ListenError):
        open_server(repo, listen=taken, db=f"sqlite:///{tmp_path}/t.db")


def test_cli_refuses_bad_listen_and_db(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUTURE_STATE_DIR", str(tmp_path))
    assert main(["serve", "--repo", str(repo), "--listen", "nowhere"]) == 64
    assert main(["serve", "--repo", str(repo), "--db", "mysql://x/y"]) == 64
    assert "is not a database URL" in capsys.readouterr().err


def test_serve_command_stops_cleanly_on_sigterm(repo: Path, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "suture.cli.main", "serve", "--repo", str(repo)]
    argv += ["--listen", "127.0.0.1:0", "--db", f"sqlite:///{tmp_path}/s.db", "--json"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "serving" in line, line
        url = line.split(" on ")[-1].strip()
        with urllib.request.urlopen(url + "/healthz", timeout=5) as resp:  # noqa: S310
            assert resp.status == 200
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=5)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out)["stopped"] is True
    assert '"GET /healthz HTTP/1.1" 200' in err


def test_a_client_that_hangs_up_leaves_no_traceback(repo: Path, tmp_path: Path) -> None:
    log: list[str] = []
    srv = open_server(repo, listen="127.0.0.1:0", db=f"sqlite:///{tmp_path}/s.db", log=log.append)
    srv.start(poll_interval=0.01)
    try:
        host, port = srv.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\n")  # then a reset instead of the rest
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        time.sleep(0.2)
        assert request(srv, "/healthz")[0] == 200  # it goes on serving
    finally:
        srv.stop()
    assert not [line for line in log if "Traceback" in line or "ERROR" in line], log


# --- who may say what ----------------------------------------------------------------


def test_a_host_reports_only_about_itself(server: Server) -> None:
    assert post(server, CHECKIN, token="")[0] == 401
    assert post(server, CHECKIN, token="sht_forged")[0] == 401  # noqa: S106
    other = enrol(server, "other")
    status, answer = post(server, CHECKIN, other)  # other's token, CHECKIN's host id
    assert (status, answer["error"]) == (403, "forbidden")
    assert "reports only about itself" in answer["message"]
    assert hosts(server) == []


def test_admin_routes_need_the_admin_token(server: Server, repo: Path, tmp_path: Path) -> None:
    for token in ("", "sat_wrong", TOKENS[server.url]):
        assert request(server, "/api/v1/hosts", token=token)[0] == 401
    closed = open_server(repo, listen="127.0.0.1:0", db=f"sqlite:///{tmp_path}/c.db", log=[].append)
    closed.start(poll_interval=0.01)
    try:
        status, _, body = request(closed, "/api/v1/hosts", token=ADMIN)
    finally:
        closed.stop()
    assert status == 403
    assert "--admin-token-file" in json.loads(body)["message"]


def test_registration_keys_enrol_revoke_and_re_enrol(server: Server) -> None:
    def register(key: str, token: str = "") -> tuple[int, dict[str, Any]]:
        body = json.dumps({"format": 1, "registration_key": key, "host_id": "h1"}).encode()
        status, _, answer = request(
            server, "/api/v1/register", method="POST", body=body, token=token
        )
        return status, json.loads(answer)

    assert register("srk_unknown")[0] == 403
    body = json.dumps({"tags": ["env:prod"], "note": "prod"}).encode()
    created = json.loads(
        request(server, "/api/v1/registration-keys", method="POST", body=body, token=ADMIN)[2]
    )
    first = enrol(server, "h1")
    # The id is h1's now: enrolling it again without h1's token is refused, whatever the key.
    status, refused = register(created["registration_key"])
    assert (status, refused["error"]) == (409, "taken")
    # With its current token it rotates: the new one works, the old one stops.
    status, rotated = register(created["registration_key"], first)
    assert status == 200
    second = rotated["host_token"]
    h1 = {**CHECKIN, "host_id": "h1"}
    assert post(server, h1, first)[0] == 401
    assert post(server, h1, second)[0] == 200
    key_id = created["key_id"]
    path = f"/api/v1/registration-keys/{key_id}"
    assert request(server, path, method="DELETE", token=ADMIN)[0] == 200
    assert register(created["registration_key"])[0] == 403
    listed = json.loads(request(server, "/api/v1/registration-keys", token=ADMIN)[2])["keys"]
    assert {k["key_id"]: k["revoked"] for k in listed}[key_id] is True
    assert all("registration_key" not in k for k in listed)  # the secret is never shown again
    assert post(server, h1, second)[0] == 200  # enrolled hosts keep their tokens
