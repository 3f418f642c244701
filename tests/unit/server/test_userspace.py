"""Userspace rows (check-in format 3) through a real server on loopback: stored, shown, counted.

A real repository with a kernel level and two levels of one libc build, a
real server on SQLite (and PostgreSQL when one is available), and hosts that
enrol and check in through the API with the rows an agent sends
(:func:`suture.agent.userlevels.checkin_rows`). A CVE fixed in memory for some
processes only is ``partial`` on that host, never fixed: in the host's API
answer, the exposure lists and counts, the export, the OpenVEX document,
the dashboard and ``suture fleet``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from suture import bundle
from suture.bundle import Manifest
from suture.bundle.manifest import UserFunction
from suture.cli.main import main
from suture.repo import create, publish
from suture.server import Server, open_server, openapi
from suture.server.db import DbUrl, open_store
from suture.server.fleet import vex
from tests.support.dashboard import Client, text
from tests.support.repo import BUILD_A, RELEASE, module_bytes, user_object
from tests.support.server import request

ADMIN = "sat_userspace-test-admin-token-01"
LIBC = "ab" * 20  # the libc build the levels are for
CRYPTO = "cd" * 20  # a libcrypto build with no level published (its row names a CVE)
KERNEL_CVE, OLD, NEW, ROW_ONLY = "CVE-2026-0001", "CVE-2026-5928", "CVE-2026-6000", "CVE-2026-7777"
LIBRARY_LEVELS = {1: (OLD,), 2: (NEW,)}  # libc.so.6 of LIBC, stable


def _bundle(folder: Path, release: str, build_id: str, level: int, cves: tuple[str, ...]) -> Path:
    user = release.startswith("lib")
    note = f"L{level} for {release}/{build_id}"
    name = "glibc_fix" if user else "suture_fix_1"
    code = user_object("n", note=note) if user else module_bytes(name, release, build_id, note=note)
    manifest = Manifest(
        name=name,
        release=release,
        build_id=build_id,
        level=level,
        module_file="glibc_fix.o" if user else "suture_fix_1.ko",
        module_sha256=hashlib.sha256(code).hexdigest(),
        module_size=len(code),
        cves=cves,
        kind="userspace" if user else "kernel",
        package="glibc" if user else "",
        version="2.36-9+deb12u14" if user else "",
        userspace_functions=(UserFunction("_IO_wdefault_pbackfail", 569504, 412, "00" * 32, "n"),)
        if user
        else (),
    )
    path = folder / f"{release}-{level}.bundle"
    bundle.write(path, manifest, code)
    return path


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("userspace") / "repo"
    create.init(root)
    publish.publish(root, _bundle(root.parent, RELEASE, BUILD_A, 1, (KERNEL_CVE,)), untested=True)
    for level, cves in LIBRARY_LEVELS.items():
        path = _bundle(root.parent, "libc.so.6", LIBC, level, cves)
        publish.publish(root, path, untested=True)
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


def row(
    level: int,
    cves: list[str],
    *,
    patched: int,
    unpatched: int = 0,
    refused: dict[str, int] | None = None,
    soname: str = "libc.so.6",
    build_id: str = LIBC,
) -> dict[str, Any]:
    """A userspace row as the agent sends it (its state follows from the counts)."""
    left = unpatched + sum((refused or {}).values())
    return {
        "soname": soname,
        "build_id": build_id,
        "level": level,
        "name": "glibc_fix",
        "cves": cves,
        "state": "patched" if patched and not left else "partial" if patched else "unpatched",
        "processes": {
            "patched": patched,
            "unpatched": unpatched,
            "failed": 0,
            "refused": refused or {},
        },
    }


PART_ROWS = [
    row(1, [OLD], patched=2, unpatched=1, refused={"init": 1}),
    row(1, [ROW_ONLY], patched=4, soname="libcrypto.so.3", build_id=CRYPTO),
]
# host -> its userspace rows (None: a format-2 check-in). Every host runs kernel level 1.
HOSTS: dict[str, list[dict[str, Any]] | None] = {
    "full": [row(1, [OLD], patched=3)],
    "part": PART_ROWS,
    "none": None,
    "l2": [row(2, [NEW], patched=5)],  # level 2 lists its own CVE; level 1's is in it too
    "unp": [row(1, [OLD], patched=0, unpatched=2)],
}
# CVE -> kind -> hosts (the ground truth of the module docstring)
TRUTH = {
    OLD: {"exposed": ["unp"], "partial": ["part"], "no_fix": ["none"], "fixed": ["full", "l2"]},
    NEW: {"exposed": ["full", "part", "unp"], "partial": [], "no_fix": ["none"], "fixed": ["l2"]},
    ROW_ONLY: {
        "exposed": [], "partial": [], "no_fix": ["full", "l2", "none", "unp"], "fixed": ["part"],
    },
    KERNEL_CVE: {"exposed": [], "partial": [], "no_fix": [], "fixed": sorted(HOSTS)},
}  # fmt: skip


def body(host_id: str, rows: list[dict[str, Any]] | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": 2,
        "host_id": host_id,
        "hostname": f"{host_id}.example.net",
        "kernel": {"release": RELEASE, "build_id": BUILD_A},
        "level": 1,
        "state": "patched",
        "agent_version": "0.1.0",
        "patches": ["suture_fix_1"],
        "channel": "stable",
        "attempted_level": 1,
    }
    return doc if rows is None else {**doc, "format": 3, "userspace": rows}


def post(server: Server, path: str, data: object, token: str = ADMIN) -> tuple[int, Any]:
    status, _, answer = request(
        server, path, method="POST", body=json.dumps(data).encode(), token=token
    )
    return status, json.loads(answer)


def get(server: Server, path: str) -> Any:
    status, headers, answer = request(server, path, token=ADMIN)
    assert status == 200, answer
    if headers.get("Content-Type", "").startswith("application/json"):
        return json.loads(answer)
    return answer.decode()


@pytest.fixture
def tokens(server: Server) -> dict[str, str]:
    """Every host of HOSTS enrolled and checked in once; their host tokens."""
    status, key = post(server, "/api/v1/registration-keys", {"tags": []})
    assert status == 200, key
    found = {}
    for host_id, rows in HOSTS.items():
        enrol = {"format": 1, "registration_key": key["registration_key"], "host_id": host_id}
        status, answer = post(server, "/api/v1/register", enrol, token="")
        assert status == 200, answer
        found[host_id] = answer["host_token"]
        status, answer = post(server, "/api/v1/checkin", body(host_id, rows), found[host_id])
        assert status == 200, answer  # format 3, and format 2 ("none") as before
    return found


def test_the_rows_are_stored_and_shown_beside_the_kernel(
    server: Server, tokens: dict[str, str]
) -> None:
    detail = get(server, "/api/v1/hosts/part")
    assert detail["host"]["level"] == 1 and detail["host"]["state"] == "patched"
    assert detail["host"]["userspace"] == sorted(PART_ROWS, key=lambda r: r["build_id"])
    assert detail["cves_partial"] == [OLD]
    assert detail["cves_fixed"] == [KERNEL_CVE, ROW_ONLY]
    full = get(server, "/api/v1/hosts/full")
    assert (full["cves_fixed"], full["cves_partial"]) == ([KERNEL_CVE, OLD], [])
    assert get(server, "/api/v1/hosts/l2")["cves_fixed"] == [KERNEL_CVE, OLD, NEW]
    assert get(server, "/api/v1/hosts/unp")["cves_fixed"] == [KERNEL_CVE]
    listed = {h["host_id"]: h["userspace"] for h in get(server, "/api/v1/hosts")["hosts"]}
    assert listed == {h: rows or [] for h, rows in HOSTS.items()} | {
        "part": detail["host"]["userspace"]
    }


def test_each_checkin_replaces_the_rows(server: Server, db: str, tokens: dict[str, str]) -> None:
    newer = [row(2, [NEW], patched=3)]
    assert post(server, "/api/v1/checkin", body("part", newer), tokens["part"])[0] == 200
    assert get(server, "/api/v1/hosts/part")["host"]["userspace"] == newer
    # A format-2 check-in (an agent with no userspace level left) leaves none.
    assert post(server, "/api/v1/checkin", body("part", None), tokens["part"])[0] == 200
    assert get(server, "/api/v1/hosts/part")["host"]["userspace"] == []
    status, _, _ = request(server, "/api/v1/hosts/full", method="DELETE", token=ADMIN)
    assert status == 200
    store = open_store(DbUrl.parse(db))
    try:
        with store.read() as tx:
            rows = tx.rows("SELECT host_id, COUNT(*) FROM host_libraries GROUP BY host_id")
    finally:
        store.close()
    assert sorted((r[0], int(r[1])) for r in rows) == [("l2", 1), ("unp", 1)]


def test_a_refused_row_stores_nothing(server: Server, tokens: dict[str, str]) -> None:
    lying = [{**row(1, [OLD], patched=2, unpatched=1), "state": "patched"}]
    status, answer = post(server, "/api/v1/checkin", body("part", lying), tokens["part"])
    assert (status, answer["field"]) == (400, "userspace[0].state")
    assert get(server, "/api/v1/hosts/part")["host"]["userspace"] == sorted(
        PART_ROWS, key=lambda r: r["build_id"]
    )


@pytest.mark.parametrize("cve", sorted(TRUTH))
def test_exposure_counts_partial_hosts_apart(
    server: Server, tokens: dict[str, str], cve: str
) -> None:
    found = get(server, f"/api/v1/exposed?cve={cve}")
    assert {k: sorted(h["host_id"] for h in found[k]) for k in TRUTH[cve]} == TRUTH[cve]
    assert found["counts"] == {k: len(v) for k, v in TRUTH[cve].items()}
    hosts = get(server, f"/api/v1/hosts?cve={cve}")["hosts"]
    assert [h["host_id"] for h in hosts] == sorted(TRUTH[cve]["exposed"])
    if cve == OLD:
        (part,) = found["partial"]
        assert [(u["soname"], u["state"], u["fixed_by"]) for u in part["libraries"]] == [
            ("libc.so.6", "partial", 1)
        ]
        assert [b["kind"] for b in found["builds_with_fix"]] == ["userspace"]


def test_export_and_summary(server: Server, tokens: dict[str, str]) -> None:
    rows = {r["host_id"]: r for r in get(server, "/api/v1/export?format=json")["hosts"]}
    assert (rows["part"]["cves_fixed"], rows["part"]["cves_partial"]) == (
        [KERNEL_CVE, ROW_ONLY],
        [OLD],
    )
    assert (rows["full"]["cves_fixed"], rows["unp"]["cves_fixed"]) == (
        [KERNEL_CVE, OLD],
        [KERNEL_CVE],
    )
    table = {
        r["host_id"]: r
        for r in csv.DictReader(io.StringIO(get(server, "/api/v1/export?format=csv")))
    }
    assert (table["part"]["cves_fixed"], table["part"]["cves_partial"]) == (
        f"{KERNEL_CVE} {ROW_ONLY}",
        OLD,
    )
    libraries = get(server, "/api/v1/summary")["libraries"]
    shown = {
        (g["library"]["soname"], g["level"], g["state"]): (g["hosts"], g["processes"])
        for g in libraries
    }
    assert shown[("libc.so.6", 1, "partial")] == (
        1,
        {"patched": 2, "unpatched": 1, "failed": 0, "refused": 1},
    )
    assert shown[("libc.so.6", 1, "patched")][0] == 1
    assert shown[("libc.so.6", 2, "patched")][0] == 1
    assert shown[("libcrypto.so.3", 1, "patched")][0] == 1


def _statuses(server: Server, host_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(product id, CVE) -> statement, of the host's signed VEX document (checked)."""
    signed = get(server, f"/api/v1/hosts/{host_id}/vex")
    assert vex.verify(signed["public_key"], vex.canonical(signed["document"]), signed["signature"])
    return {
        (s["products"][0]["@id"], s["vulnerability"]["name"]): s
        for s in signed["document"]["statements"]
    }


def test_vex_says_partial_where_some_processes_lack_the_fix(
    server: Server, tokens: dict[str, str]
) -> None:
    libc = f"pkg:generic/libc.so.6?build_id={LIBC}"
    kernel = f"pkg:generic/linux@{RELEASE}?build_id={BUILD_A}"
    part = _statuses(server, "part")
    assert {k: s["status"] for k, s in part.items()} == {
        (kernel, KERNEL_CVE): "fixed",
        (libc, OLD): "affected",
        (libc, NEW): "affected",
        (f"pkg:generic/libcrypto.so.3?build_id={CRYPTO}", ROW_ONLY): "fixed",
    }
    note = part[(libc, OLD)]["status_notes"]
    assert note.startswith("partially fixed in memory") and "2 of 4 processes" in note
    assert "1 not reached yet, 1 refused (init)" in note
    assert "restart" in part[(libc, OLD)]["action_statement"]
    assert "level 2 or later of libc.so.6" in part[(libc, NEW)]["action_statement"]
    full = _statuses(server, "full")
    assert full[(libc, OLD)]["status"] == "fixed"
    assert "in all 3 processes" in full[(libc, OLD)]["status_notes"]
    assert _statuses(server, "unp")[(libc, OLD)]["status"] == "affected"
    assert {k[1]: s["status"] for k, s in _statuses(server, "l2").items()} == {
        KERNEL_CVE: "fixed",
        OLD: "fixed",
        NEW: "fixed",
    }
    assert set(_statuses(server, "none")) == {(kernel, KERNEL_CVE)}


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/hosts",
        "/api/v1/hosts/part",
        f"/api/v1/exposed?cve={OLD}",
        "/api/v1/summary",
        "/api/v1/export?format=json",
        "/api/v1/hosts/part/vex",
        "/api/v1/levels",
    ],
)
def test_answers_match_the_openapi_schemas(
    server: Server, tokens: dict[str, str], path: str
) -> None:
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    doc = openapi.document()
    template = next(
        p
        for p in doc["paths"]
        if re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", p), path.partition("?")[0])
    )
    schema = doc["paths"][template]["get"]["responses"]["200"]["content"]["application/json"]
    jsonschema_rs.validate({**schema["schema"], "components": doc["components"]}, get(server, path))


def test_the_dashboard_shows_the_rows_and_partial_cves(
    server: Server, tokens: dict[str, str]
) -> None:
    c = Client(server)
    c.login(ADMIN)
    host = text(c.get("/hosts/part")[2])
    assert f"CVEs partly fixed in memory {OLD} (some processes still run" in host
    assert f"libc.so.6 {LIBC[:12]} 1 glibc_fix {OLD} partial 2 1 0 1 (init) 2: {NEW}" in host
    assert f"libcrypto.so.3 {CRYPTO[:12]} 1 glibc_fix {ROW_ONLY} patched 4 0 0" in host
    assert "No userspace level" in text(c.get("/hosts/none")[2])
    # CVE, builds with a fix, fixed, partly fixed, exposed, no fix.
    cves = text(c.get("/cves")[2])
    assert f"{OLD} 1 2 1 1 1" in cves and f"{ROW_ONLY} 0 1 0 0 4" in cves
    assert f"{KERNEL_CVE} 1 5 0 0 0" in cves
    cve = text(c.get(f"/cves/{OLD}")[2])
    assert "Partly fixed hosts: some processes still run the unpatched code (1)" in cve
    partly = cve.split("Partly fixed hosts")[1].split("Hosts with no fix")[0]
    assert "part.example.net" in partly and "libc.so.6 L1" in partly
    builds = text(c.get("/kernels")[2])
    libraries = builds.split("Library builds (userspace)")[1]
    assert f"libc.so.6 {LIBC[:12]} (stable)" in libraries
    assert f"1 glibc_fix {OLD}" in libraries and f"2 glibc_fix {NEW}" in libraries
    assert "libc.so.6" not in builds.split("Library builds (userspace)")[0]  # not a kernel


def test_fleet_commands_show_the_rows(
    server: Server, tokens: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "admin-token"
    token.write_text(ADMIN + "\n")
    common = ["--server", server.url, "--admin-token-file", str(token)]
    assert main(["fleet", "host", "show", "part", *common]) == 0
    shown = capsys.readouterr().out
    assert re.search(rf"libc\.so\.6\s+{LIBC[:12]}\s+1\s+partial\s+2\s+2\s+{OLD}", shown)
    assert f"partly fixed in memory (some processes): {OLD}" in shown
    assert main(["fleet", "exposed", OLD, *common]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"{OLD}: 1 exposed, 2 fixed, 1 partly fixed (some processes only)")
    assert re.search(r"unp\s.*libc\.so\.6 L1", shown)
