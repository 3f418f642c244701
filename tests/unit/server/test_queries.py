"""Fleet queries over real HTTP on loopback: filters, exposure, summary, export, VEX, metrics.

A real repository with levels and CVEs for two kernel builds, a real server
on SQLite (and PostgreSQL when one is available), and a fleet of hosts that
enrol and check in through the API. Hosts silent for a while are recorded
through a second connection to the same database with an old time. The
answers are checked against a ground truth computed here, by brute force,
from the levels published.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from suture import bundle
from suture.bundle import Manifest
from suture.cli.main import main
from suture.contract.checkin import Checkin
from suture.repo import create, publish
from suture.server import Server, open_server, openapi
from suture.server.db import DbUrl, open_store
from suture.server.db import hosts as db_hosts
from suture.server.fleet import vex
from tests.support.metrics import parse_exposition
from tests.support.repo import BUILD_A, BUILD_B, RELEASE, module_bytes
from tests.support.server import request

ADMIN = "sat_queries-test-admin-token-0123"
BUILD_C = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"  # a build with no level published
RELEASE_B = "6.1.0-57-amd64"

# (release, build id, channel) -> {level: CVEs it fixes (new in that level)}
LEVELS: dict[tuple[str, str, str], dict[int, tuple[str, ...]]] = {
    (RELEASE, BUILD_A, "stable"): {
        1: ("CVE-2026-0001",),
        2: ("CVE-2026-0002", "CVE-2026-0003"),
        3: ("CVE-2026-0004",),
    },
    (RELEASE_B, BUILD_B, "stable"): {1: ("CVE-2026-0002",), 2: ("CVE-2026-0005",)},
    (RELEASE, BUILD_A, "testing"): {1: ("CVE-2026-0001", "CVE-2026-0005")},
}
CVES = sorted({c for levels in LEVELS.values() for cves in levels.values() for c in cves})
KERNELS = [(RELEASE, BUILD_A), (RELEASE_B, BUILD_B), (RELEASE, BUILD_C), (RELEASE, "")]


def _bundle(folder: Path, release: str, build_id: str, level: int, cves: tuple[str, ...]) -> Path:
    module = module_bytes("suture_fix_1", release, build_id, note=f"L{level} {cves}")
    manifest = Manifest(
        name="suture_fix_1",
        release=release,
        build_id=build_id,
        level=level,
        module_file="suture_fix_1.ko",
        module_sha256=hashlib.sha256(module).hexdigest(),
        module_size=len(module),
        cves=cves,
    )
    path = folder / f"{build_id[:8]}-{level}-{len(cves)}-{cves[0]}.bundle"
    bundle.write(path, manifest, module)
    return path


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("queries") / "repo"
    create.init(root)
    for (release, build_id, channel), levels in LEVELS.items():
        for level, cves in levels.items():
            path = _bundle(root.parent, release, build_id, level, cves)
            # Fake modules cannot be tested in a guest: signed in as not tested.
            publish.publish(root, path, channel, untested=True)
    return root


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite:///{tmp_path}/s.db"


@pytest.fixture
def server(repo: Path, db: str, tmp_path: Path) -> Iterator[Server]:
    srv = open_server(
        repo,
        listen="127.0.0.1:0",
        db=db,
        log=[].append,
        admin_token=ADMIN,
        signing_key_file=tmp_path / "keys" / "vex.key",
    )
    srv.start(poll_interval=0.01)
    yield srv
    srv.stop()


def get(server: Server, path: str, token: str = ADMIN) -> tuple[int, Any]:
    status, headers, body = request(server, path, token=token)
    if headers.get("Content-Type", "").startswith("application/json"):
        return status, json.loads(body)
    return status, body


@dataclass(frozen=True)
class Host:
    host_id: str
    release: str
    build_id: str
    channel: str
    level: int
    state: str
    tags: tuple[str, ...]
    old: bool = False  # last seen long ago (inactive)

    @property
    def live(self) -> int:
        """Ground truth: the level in memory."""
        if not self.build_id or self.state not in ("patched", "failed"):
            return 0
        return self.level

    def shown_state(self) -> str:
        return "unsupported" if not self.build_id else self.state

    def published(self) -> dict[int, tuple[str, ...]]:
        if not self.build_id:
            return {}
        return LEVELS.get((self.release, self.build_id, self.channel), {})

    def fixed(self) -> set[str]:
        return {c for lv, cves in self.published().items() if lv <= self.live for c in cves}

    def exposure(self, cve: str) -> str:
        if not any(cve in cves for cves in self.published().values()):
            return "no_fix"
        return "fixed" if cve in self.fixed() else "exposed"

    def body(self) -> dict[str, Any]:
        return {
            "format": 2,
            "host_id": self.host_id,
            "hostname": f"{self.host_id}.example.net",
            "kernel": {"release": self.release, "build_id": self.build_id},
            "level": self.level,
            "state": self.state,
            "agent_version": "0.1.0",
            "patches": ["suture_fix_1"] if self.level else [],
            "channel": self.channel,
            "attempted_level": self.level + (self.state == "failed"),
            **({"last_error": "load: -EINVAL"} if self.state == "failed" else {}),
        }


def make_fleet(seed: int, size: int) -> list[Host]:
    rnd = random.Random(seed)  # noqa: S311 - a reproducible fleet, not a secret
    fleet = []
    for i in range(size):
        release, build_id = rnd.choice(KERNELS)
        state = "unsupported" if not build_id else rnd.choice(["patched", "unpatched", "failed"])
        level = 0 if state in ("unpatched", "unsupported") else rnd.randint(1, 3)
        channel = rnd.choice(["stable", "stable", "testing"])
        tags = rnd.choice([(), ("env:prod",), ("env:dev", "ring:0"), ("env_prod",)])
        fleet.append(
            Host(f"host-{i:03d}", release, build_id, channel, level, state, tags, old=i % 7 == 3)
        )
    return fleet


def check_in(server: Server, db: str, fleet: list[Host]) -> None:
    """Enrol and check in every host through the API; old hosts again, with an old time."""
    keys: dict[tuple[str, ...], str] = {}
    for host in fleet:
        if host.tags not in keys:
            body = json.dumps({"tags": list(host.tags)}).encode()
            status, _, answer = request(
                server, "/api/v1/registration-keys", method="POST", body=body, token=ADMIN
            )
            assert status == 200, answer
            keys[host.tags] = json.loads(answer)["registration_key"]
        body = json.dumps({"registration_key": keys[host.tags], "host_id": host.host_id}).encode()
        status, _, answer = request(server, "/api/v1/register", method="POST", body=body)
        assert status == 200, answer
        token = json.loads(answer)["host_token"]
        body = json.dumps(host.body()).encode()
        status, _, answer = request(
            server, "/api/v1/checkin", method="POST", body=body, token=token
        )
        assert status == 200, answer
    store = open_store(DbUrl.parse(db))
    try:
        long_ago = datetime(2020, 1, 1, tzinfo=UTC)
        for host in fleet:
            if host.old:
                b = host.body()
                checkin = Checkin(
                    host_id=host.host_id,
                    hostname=b["hostname"],
                    release=host.release,
                    build_id=host.build_id,
                    level=host.level,
                    state=host.state,
                    last_error=b.get("last_error"),
                    agent_version="0.1.0",
                    patches=tuple(b["patches"]),
                    channel=host.channel,
                    attempted_level=b["attempted_level"],
                )
                db_hosts.record(store, checkin, "192.0.2.1", long_ago.timestamp())
    finally:
        store.close()


@pytest.fixture
def fleet(server: Server, db: str) -> list[Host]:
    # A random fleet, and one host whose OpenVEX document the tests know by heart.
    hosts = [
        *make_fleet(seed=5, size=42),
        Host("vex-1", RELEASE, BUILD_A, "stable", 1, "patched", ()),
    ]
    check_in(server, db, hosts)
    return hosts


# --- GET /api/v1/hosts and its filters ----------------------------------------------------


def ids(hosts: list[dict[str, Any]]) -> list[str]:
    return [h["host_id"] for h in hosts]


def test_hosts_filters_match_the_ground_truth(server: Server, fleet: list[Host]) -> None:
    status, data = get(server, "/api/v1/hosts")
    assert status == 200
    assert ids(data["hosts"]) == [h.host_id for h in fleet]
    by_id = {h["host_id"]: h for h in data["hosts"]}
    for host in fleet:
        shown = by_id[host.host_id]
        assert shown["state"] == host.shown_state()
        assert shown["active"] is not host.old
        assert shown["status"] == ("inactive" if host.old else host.shown_state())
    cases: list[tuple[str, Any]] = [
        ("release=" + RELEASE_B, lambda h: h.release == RELEASE_B),
        ("build_id=" + BUILD_A, lambda h: h.build_id == BUILD_A),
        ("level=2", lambda h: h.level == 2),
        ("state=unsupported", lambda h: h.shown_state() == "unsupported"),
        ("state=failed&channel=testing", lambda h: h.state == "failed" and h.channel == "testing"),
        ("status=inactive", lambda h: h.old),
        ("status=patched", lambda h: not h.old and h.shown_state() == "patched"),
        ("tag=env:prod", lambda h: "env:prod" in h.tags),  # not env_prod: _ is no wildcard
        ("tag=ENV:PROD", lambda h: False),  # tags are matched exactly, case too
        ("tag=ring:0&level=1", lambda h: "ring:0" in h.tags and h.level == 1),
    ]
    cases += [(f"cve={cve}", lambda h, cve=cve: h.exposure(cve) == "exposed") for cve in CVES]
    for query, keep in cases:
        status, data = get(server, f"/api/v1/hosts?{query}")
        assert status == 200, (query, data)
        assert ids(data["hosts"]) == [h.host_id for h in fleet if keep(h)], query


def test_inactive_after_moves_the_threshold(server: Server, fleet: list[Host]) -> None:
    _, data = get(server, "/api/v1/hosts?status=inactive&inactive_after=315360000")
    assert data["hosts"] == []  # ten years: nobody is inactive


@pytest.mark.parametrize(
    "query",
    [
        "level=x",
        "level=-1",
        "state=asleep",
        "status=gone",
        "cve=bad%20id",
        "surprise=1",
        "inactive_after=0",
        "level=1&level=2",
    ],
)
def test_bad_filters_are_refused(server: Server, query: str) -> None:
    status, data = get(server, f"/api/v1/hosts?{query}")
    assert status == 400, data
    assert data["ok"] is False


def test_queries_need_the_admin_token(server: Server) -> None:
    for path in (
        "/api/v1/hosts",
        "/api/v1/exposed?cve=CVE-1",
        "/api/v1/summary",
        "/api/v1/export",
        "/api/v1/hosts/h/vex",
    ):
        assert get(server, path, token="")[0] == 401, path
        wrong = "sat_wrong-token-0000000000"
        assert get(server, path, token=wrong)[0] == 401, path


# --- exposure ---------------------------------------------------------------------------


def test_exposed_matches_the_ground_truth(server: Server, fleet: list[Host]) -> None:
    for cve in [*CVES, "CVE-2026-9999"]:
        status, data = get(server, f"/api/v1/exposed?cve={cve}")
        assert status == 200, data
        for kind in ("exposed", "fixed", "no_fix"):
            expected = [h.host_id for h in fleet if h.exposure(cve) == kind]
            assert ids(data[kind]) == expected, (cve, kind)
            assert data["counts"][kind] == len(expected)
        for entry in data["no_fix"]:
            assert entry["reason"] == "no fix published for this build"
        for entry in data["exposed"] + data["fixed"]:
            host = next(h for h in fleet if h.host_id == entry["host_id"])
            first = min(lv for lv, cves in host.published().items() if cve in cves)
            assert entry["fixed_by"]["level"] == first


def test_exposed_on_a_build_fixed_twice_takes_the_first_level() -> None:
    # CVE-2026-0002 is fixed by level 2 of build A and level 1 of build B: a host
    # of build B on level 1 is fixed, one of build A on level 1 is exposed.
    a = Host("a", RELEASE, BUILD_A, "stable", 1, "patched", ())
    b = Host("b", RELEASE_B, BUILD_B, "stable", 1, "patched", ())
    assert (a.exposure("CVE-2026-0002"), b.exposure("CVE-2026-0002")) == ("exposed", "fixed")


def test_exposed_needs_a_cve(server: Server) -> None:
    assert get(server, "/api/v1/exposed")[0] == 400
    assert get(server, "/api/v1/exposed?cve=")[0] == 400


# --- summary, export --------------------------------------------------------------------


def test_summary_counts_the_fleet(server: Server, fleet: list[Host]) -> None:
    status, data = get(server, "/api/v1/summary")
    assert status == 200
    totals = data["totals"]
    assert totals["hosts"] == len(fleet)
    assert totals["inactive"] == sum(h.old for h in fleet)
    assert totals["active"] == len(fleet) - totals["inactive"]
    assert totals["unsupported"] == sum(h.shown_state() == "unsupported" for h in fleet)
    assert totals["failed"] == sum(h.shown_state() == "failed" for h in fleet)
    groups: dict[tuple[str, str, int, str], int] = {}
    for h in fleet:
        key = (h.release, h.build_id, h.level, h.shown_state())
        groups[key] = groups.get(key, 0) + 1
    found = {
        (g["kernel"]["release"], g["kernel"]["build_id"], g["level"], g["state"]): g["hosts"]
        for g in data["groups"]
    }
    assert found == groups
    failed = sorted(h.host_id for h in fleet if h.shown_state() == "failed")
    assert sorted(ids(data["failures"])) == failed
    for f in data["failures"]:
        assert f["last_error"] == "load: -EINVAL"
        assert f["attempted_level"] == f["level"] + 1


def test_export_json_and_csv_say_what_is_fixed_in_memory(server: Server, fleet: list[Host]) -> None:
    status, data = get(server, "/api/v1/export?format=json")
    assert status == 200
    rows = {r["host_id"]: r for r in data["hosts"]}
    for host in fleet:
        assert rows[host.host_id]["cves_fixed"] == sorted(host.fixed())
        assert rows[host.host_id]["tags"] == list(host.tags)
        assert rows[host.host_id]["state"] == host.shown_state()
    status, headers, body = request(server, "/api/v1/export?format=csv", token=ADMIN)
    assert status == 200
    assert headers["Content-Type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(body.decode())))
    assert [r["host_id"] for r in table] == [h.host_id for h in fleet]
    for r, host in zip(table, fleet, strict=True):
        assert r["cves_fixed"].split() == sorted(host.fixed())
        assert r["level"] == str(host.level)
        assert r["active"] == ("false" if host.old else "true")
    assert get(server, "/api/v1/export?format=xml")[0] == 400


# --- OpenVEX ------------------------------------------------------------------------------


def test_vex_is_signed_and_says_fixed_and_affected(server: Server, fleet: list[Host]) -> None:
    host = fleet[-1]
    status, signed = get(server, f"/api/v1/hosts/{host.host_id}/vex")
    assert status == 200, signed
    doc = signed["document"]
    assert doc["@context"] == "https://openvex.dev/ns/v0.2.0"
    assert doc["@id"].startswith("urn:suture:vex:")
    assert {"author", "timestamp", "version"} <= set(doc)
    status_of = {s["vulnerability"]["name"]: s["status"] for s in doc["statements"]}
    assert status_of == {
        "CVE-2026-0001": "fixed",
        "CVE-2026-0002": "affected",
        "CVE-2026-0003": "affected",
        "CVE-2026-0004": "affected",
    }
    for s in doc["statements"]:
        product = s["products"][0]
        assert product["@id"] == f"pkg:generic/linux@{RELEASE}?build_id={BUILD_A}"
        assert product["subcomponents"] == [{"@id": f"urn:suture:host:{host.host_id}"}]
        assert ("action_statement" in s) is (s["status"] == "affected")

    _, key = get(server, "/api/v1/vex-key", token="")  # public
    assert key["public_key"] == signed["public_key"]
    signed_bytes = vex.canonical(doc)
    assert vex.verify(key["public_key"], signed_bytes, signed["signature"])
    tampered = json.loads(signed_bytes)
    tampered["statements"][1]["status"] = "fixed"
    assert not vex.verify(key["public_key"], vex.canonical(tampered), signed["signature"])

    # format=openvex: the signed bytes themselves, the signature in a header.
    status, headers, body = request(
        server, f"/api/v1/hosts/{host.host_id}/vex?format=openvex", token=ADMIN
    )
    assert status == 200
    assert json.loads(body)["statements"] == doc["statements"]
    assert vex.verify(key["public_key"], body, headers["X-Suture-Signature"])


def test_vex_of_an_unsupported_host_is_empty(server: Server, fleet: list[Host]) -> None:
    host = next(h for h in fleet if not h.build_id)
    _, signed = get(server, f"/api/v1/hosts/{host.host_id}/vex")
    assert signed["document"]["statements"] == []
    assert get(server, "/api/v1/hosts/no-such-host/vex")[0] == 404


def test_the_signing_key_is_kept_private_and_reused(repo: Path, tmp_path: Path) -> None:
    path = tmp_path / "state" / "vex.key"
    first = vex.public_raw(vex.load_or_create(path))
    assert path.stat().st_mode & 0o777 == 0o600
    assert vex.public_raw(vex.load_or_create(path)) == first
    srv = open_server(repo, listen="127.0.0.1:0", db=f"sqlite:///{tmp_path}/db/s.db")
    srv.stop()
    beside = tmp_path / "db" / vex.KEY_NAME  # the default: beside the database
    assert beside.stat().st_mode & 0o777 == 0o600


def test_a_damaged_signing_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "vex.key"
    path.write_text("not a key\n")
    with pytest.raises(Exception, match="no usable signing key"):
        vex.load_or_create(path)


def test_verify_refuses_garbage() -> None:
    key = base64.b64encode(b"\0" * 32).decode()
    assert not vex.verify(key, b"{}", "not base64!")
    assert not vex.verify("short", b"{}", base64.b64encode(b"x" * 64).decode())


# --- /metrics -----------------------------------------------------------------------------


def test_metrics_count_the_fleet_and_the_requests(server: Server, fleet: list[Host]) -> None:
    get(server, "/api/v1/hosts/host-000")
    get(server, "/api/v1/hosts/host-001")
    request(server, "/no/such/path")
    status, headers, body = request(server, "/metrics")  # public
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = parse_exposition(body.decode())
    for state in ("patched", "unpatched", "failed", "unsupported"):
        expected = sum(h.shown_state() == state for h in fleet)
        assert samples[f'suture_hosts{{state="{state}"}}'] == expected
    assert samples["suture_hosts_failed"] == sum(h.shown_state() == "failed" for h in fleet)
    assert samples['suture_hosts_activity{activity="inactive"}'] == sum(h.old for h in fleet)
    assert samples['suture_hosts_by_level{level="0"}'] == sum(h.level == 0 for h in fleet)
    assert samples["suture_checkins_total"] == len(fleet)
    one = '{route="/api/v1/hosts/{host_id}",method="GET",status="200"}'
    assert samples["suture_http_requests_total" + one] == 2
    assert samples['suture_http_requests_total{route="unmatched",method="GET",status="404"}'] == 1
    count = 'suture_http_request_duration_seconds_count{route="/api/v1/checkin",method="POST"}'
    assert samples[count] == len(fleet)
    inf = (
        "suture_http_request_duration_seconds_bucket"
        '{route="/api/v1/checkin",method="POST",le="+Inf"}'
    )
    assert samples[inf] == len(fleet)


# --- the answers match /openapi.json --------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/hosts",
        "/api/v1/hosts?state=failed",
        "/api/v1/hosts/host-001",
        "/api/v1/exposed?cve=CVE-2026-0002",
        "/api/v1/summary",
        "/api/v1/export?format=json",
        "/api/v1/hosts/vex-1/vex",
        "/api/v1/hosts/vex-1/vex?format=openvex",
        "/api/v1/vex-key",
        "/api/v1/levels",
        "/api/v1/exposed",
    ],
)
def test_answers_match_the_openapi_schemas(server: Server, fleet: list[Host], path: str) -> None:
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    doc = openapi.document()
    status, answer = get(server, path)
    template = next(
        p
        for p in doc["paths"]
        if re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", p), path.partition("?")[0])
    )
    op = doc["paths"][template]["get"]
    schema = op["responses"][str(status)]["content"]["application/json"]["schema"]
    jsonschema_rs.validate({**schema, "components": doc["components"]}, answer)


# --- suture fleet ... ---------------------------------------------------------------------


def test_fleet_commands(
    server: Server, fleet: list[Host], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "admin-token"
    token.write_text(ADMIN + "\n")
    common = ["--server", server.url, "--admin-token-file", str(token)]

    assert main(["fleet", "hosts", *common, "--state", "failed", "--channel", "stable"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["HOST", "HOSTNAME", "RELEASE"]
    expected = [h.host_id for h in fleet if h.state == "failed" and h.channel == "stable"]
    assert [line.split()[0] for line in lines[1:]] == expected

    assert main(["fleet", "hosts", *common, "--json", "--cve", "CVE-2026-0004"]) == 0
    shown = json.loads(capsys.readouterr().out)["hosts"]
    assert ids(shown) == [h.host_id for h in fleet if h.exposure("CVE-2026-0004") == "exposed"]

    assert main(["fleet", "exposed", *common, "CVE-2026-0002"]) == 0
    text = capsys.readouterr().out
    counts = {k: sum(h.exposure("CVE-2026-0002") == k for h in fleet) for k in ("exposed", "fixed")}
    assert text.startswith(f"CVE-2026-0002: {counts['exposed']} exposed, {counts['fixed']} fixed")

    assert main(["fleet", "summary", *common]) == 0
    assert capsys.readouterr().out.startswith(f"{len(fleet)} hosts: ")

    out = tmp_path / "fleet.csv"
    assert main(["fleet", "export", *common, "--format", "csv", "-o", str(out)]) == 0
    assert len(list(csv.DictReader(out.open()))) == len(fleet)
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert main(["fleet", "export", *common, "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["hosts"]) == len(fleet)

    doc = tmp_path / "vex-1.openvex.json"
    assert main(["fleet", "vex", *common, "vex-1", "-o", str(doc)]) == 0
    _, key = get(server, "/api/v1/vex-key")
    signature = doc.with_name(doc.name + ".sig").read_text().strip()
    assert vex.verify(key["public_key"], doc.read_bytes(), signature)
    assert main(["fleet", "vex", *common, "no-such-host"]) == 81
