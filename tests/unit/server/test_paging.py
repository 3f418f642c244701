"""Lists a page at a time (API and CLI), and the operator's actions on hosts and keys (CLI).

At 10,000 hosts a list of every host is megabytes of JSON and seconds of
work: every list (hosts, a host's history, exposure, the export) comes in
pages of 200 rows unless more are asked for, with a cursor to the next one.
"""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from suture.cli.main import main
from suture.contract.checkin import Checkin
from suture.repo import create, publish
from suture.server import Server, open_server
from suture.server.db import DbUrl, open_store
from suture.server.db import hosts as db_hosts
from tests.support.repo import BUILD_A, RELEASE, make_bundle

ADMIN = "sat_paging-test-admin-token-0123456789abc"
HOSTS = 250
NOW = 1_800_000_000.0


def report(i: int, state: str = "patched", level: int = 1) -> Checkin:
    return Checkin(
        host_id=f"host-{i:03d}",
        hostname=f"h{i}",
        release=RELEASE,
        build_id=BUILD_A,
        level=level if state == "patched" else 0,
        state=state,
        last_error=None,
        agent_version="0.1.0",
        patches=(),
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("paging")
    create.init(folder / "repo")
    publish.publish(folder / "repo", make_bundle(folder, 1), "stable")
    db = f"sqlite:///{folder}/s.db"
    store = open_store(DbUrl.parse(db))
    try:
        for i in range(HOSTS):  # half of them patched (fixed), half not (exposed)
            db_hosts.record(store, report(i, "patched" if i % 2 else "unpatched"), "a", NOW)
        for n in range(7):  # host-000's history: seven changes
            db_hosts.record(store, report(0, "patched", level=n + 1), "a", NOW + n)
    finally:
        store.close()
    srv = open_server(
        folder / "repo", listen="127.0.0.1:0", db=db, log=[].append, admin_token=ADMIN
    )
    srv.start()
    yield srv
    srv.stop()


def get(server: Server, path: str) -> tuple[int, Any, dict[str, str]]:
    req = urllib.request.Request(server.url + path)  # noqa: S310 - loopback
    req.add_header("Authorization", f"Bearer {ADMIN}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
            body = r.read()
            headers = {k.lower(): v for k, v in r.headers.items()}
            return (
                r.status,
                json.loads(body) if "json" in headers["content-type"] else body,
                headers,
            )
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), {}


def walk(server: Server, path: str, key: str) -> list[list[Any]]:
    """Every page of a list."""
    sep = "&" if "?" in path else "?"
    pages = []
    cursor = ""
    while True:
        status, data, _ = get(server, path + (f"{sep}cursor={cursor}" if cursor else ""))
        assert status == 200, data
        pages.append(data[key])
        cursor = data["next_cursor"]
        if not cursor:
            return pages


def test_the_hosts_list_comes_in_pages_of_200(server: Server) -> None:
    pages = walk(server, "/api/v1/hosts", "hosts")
    assert [len(p) for p in pages] == [200, 50]
    ids = [h["host_id"] for p in pages for h in p]
    assert ids == [f"host-{i:03d}" for i in range(HOSTS)]  # each once, in order
    small = walk(server, "/api/v1/hosts?state=unpatched&limit=40", "hosts")
    assert [len(p) for p in small] == [40, 40, 40, 4]  # host-000 is patched now
    assert all(h["state"] == "unpatched" for p in small for h in p)


def test_a_cursor_is_for_its_own_list(server: Server) -> None:
    _, data, _ = get(server, "/api/v1/hosts?limit=10")
    theirs = data["next_cursor"]
    assert get(server, f"/api/v1/export?cursor={theirs}")[0] == 400
    assert get(server, "/api/v1/hosts?cursor=garbage")[0] == 400
    assert get(server, "/api/v1/hosts?limit=0")[0] == 400
    assert get(server, "/api/v1/hosts?limit=100000")[0] == 400


def test_a_hosts_history_comes_in_pages(server: Server) -> None:
    _, host, _ = get(server, "/api/v1/hosts/host-000")
    assert [e["level"] for e in host["history"]] == [7, 6, 5, 4, 3, 2, 1, 0]
    assert host["history_next_cursor"] is None
    pages = walk(server, "/api/v1/hosts/host-000/events?limit=3", "events")
    assert [[e["level"] for e in p] for p in pages] == [[7, 6, 5], [4, 3, 2], [1, 0]]
    assert get(server, "/api/v1/hosts/nobody/events")[0] == 404


def test_the_export_comes_in_pages_json_and_csv(server: Server) -> None:
    pages = walk(server, "/api/v1/export?format=json&limit=100", "hosts")
    assert [len(p) for p in pages] == [100, 100, 50]
    status, body, headers = get(server, "/api/v1/export?format=csv&limit=200")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert (status, len(rows)) == (200, 200)
    status, body, headers2 = get(
        server, f"/api/v1/export?format=csv&cursor={headers['x-next-cursor']}"
    )
    assert len(list(csv.DictReader(io.StringIO(body.decode())))) == 50
    assert "x-next-cursor" not in headers2


def test_exposure_lists_come_in_pages(server: Server) -> None:
    _, first, _ = get(server, "/api/v1/exposed?cve=CVE-2026-1001&limit=50")
    assert first["counts"] == {"exposed": 124, "partial": 0, "fixed": 126, "no_fix": 0}
    assert (len(first["exposed"]), len(first["fixed"])) == (50, 50)
    exposed = list(first["exposed"])
    cursor = first["next_cursors"]["exposed"]
    while cursor:
        _, more, _ = get(server, f"/api/v1/exposed?cve=CVE-2026-1001&kind=exposed&cursor={cursor}")
        assert more["fixed"] == []  # only the list asked for
        exposed += more["exposed"]
        cursor = more["next_cursors"]["exposed"]
    assert len({h["host_id"] for h in exposed}) == 124


def test_fleet_commands_page_and_act_on_hosts_and_keys(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "admin-token"
    token.write_text(ADMIN + "\n")
    common = ["--server", server.url, "--admin-token-file", str(token)]

    assert main(["fleet", "hosts", *common, "--limit", "100"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 + 100 + 1 and out[-1].startswith("next page: --cursor ")
    assert main(["fleet", "hosts", *common, "--all", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["hosts"]) == HOSTS
    assert main(["fleet", "export", *common, "--format", "csv"]) == 0
    assert len(list(csv.DictReader(io.StringIO(capsys.readouterr().out)))) == HOSTS

    assert main(["fleet", "host", "show", *common, "host-000"]) == 0
    assert "host-000 (h0)" in capsys.readouterr().out
    assert main(["fleet", "host", "show", *common, "host-000", "--limit", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["events"]) == 3

    assert main(["fleet", "key", "create", *common, "--max-hosts", "1", "--expires-in", "1h"]) == 0
    assert "at most 1 hosts, until " in capsys.readouterr().out
    assert main(["fleet", "key", "create", *common, "--expires-in", "soon"]) == 64
    assert main(["fleet", "key", "list", *common]) == 0
    assert " 0/1 hosts " in capsys.readouterr().out
    assert main(["fleet", "key", "create", *common, "--json"]) == 0
    key_id = json.loads(capsys.readouterr().out)["key_id"]
    assert main(["fleet", "key", "revoke", *common, key_id, "--hosts", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hosts_revoked"] == 0

    assert main(["fleet", "host", "revoke", *common, "host-001"]) == 81  # never enrolled
    assert main(["fleet", "host", "delete", *common, "host-249"]) == 0
    assert capsys.readouterr().out == "deleted host-249\n"
    assert main(["fleet", "host", "delete", *common, "host-249"]) == 81
    assert "404" in capsys.readouterr().err
