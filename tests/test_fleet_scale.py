"""A simulated fleet of 10,000 hosts against a real server, on SQLite and on PostgreSQL.

Every host enrols with the registration key of its group and reports once
(check-in format 2), through asyncio agents over loopback (tests/fleet_sim.py).
The fleet is random but seeded, so its ground truth is known: the hosts list,
the exposure to each CVE, the summary and the exports must say exactly that,
and every check-in must have been answered with the directive the rollout
policies give that host.

Lists come a page at a time (no page over 200 rows unless more are asked
for); the checks read every page. The same fleet split across two server
processes on one PostgreSQL database (each host enrols with one and reports
to the other) must give the same ground truth, from either process.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import fleet_sim
from tests.fleet_sim import ADMIN_TOKEN, CVES, KEYS, SimHost

HOSTS = 10_000
SEED = 20261125
CONCURRENCY = 100  # simulated agents at once
LIMIT = 150.0  # s for the whole simulation (enrolment and reports)
PAGE = 200  # rows in a page when none are asked for


def call(url: str, path: str, token: str = ADMIN_TOKEN, body: Any = None) -> tuple[int, bytes]:
    """A request with a bearer token: (status, body)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data)  # noqa: S310 - loopback
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as answer:  # noqa: S310
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get(url: str, path: str) -> Any:
    status, body = call(url, path)
    assert status == 200, body[:500]
    return json.loads(body)


def get_all(url: str, path: str, key: str = "hosts") -> list[Any]:
    """Every page of a list (each of at most 200 rows: none was asked for)."""
    sep = "&" if "?" in path else "?"
    data = get(url, path)
    found = list(data[key])
    while data["next_cursor"]:
        assert len(data[key]) <= PAGE
        data = get(url, f"{path}{sep}cursor={data['next_cursor']}")
        found += data[key]
    return found


def exposure_all(url: str, cve: str) -> dict[str, Any]:
    """The exposure to ``cve`` with every page of its three lists."""
    answer = get(url, f"/api/v1/exposed?cve={cve}")
    for kind, first in answer["next_cursors"].items():
        assert len(answer[kind]) <= PAGE
        cursor = first
        while cursor:
            more = get(url, f"/api/v1/exposed?cve={cve}&kind={kind}&cursor={cursor}")
            answer[kind] += more[kind]
            cursor = more["next_cursors"][kind]
    return answer


def csv_all(url: str) -> str:
    """Every page of the CSV export, one header line."""
    text, cursor = "", ""
    while True:
        req = urllib.request.Request(  # noqa: S310 - loopback
            f"{url}/api/v1/export?format=csv" + (f"&cursor={cursor}" if cursor else "")
        )
        req.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
        with urllib.request.urlopen(req, timeout=60) as answer:  # noqa: S310
            page = answer.read().decode()
            cursor = answer.headers.get("X-Next-Cursor", "")
        assert page.count("\n") <= PAGE + 1
        text += page if not text else page.split("\n", 1)[1]
        if not cursor:
            return text


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/server.db"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def served(db: str, tmp_path: Path) -> Iterator[fleet_sim.Served]:
    fleet_sim.make_repo(tmp_path / "repo")
    with fleet_sim.serve(tmp_path / "repo", db, tmp_path) as srv:
        yield srv


def test_ten_thousand_hosts_enrol_report_and_are_queried_right(
    served: fleet_sim.Served,
) -> None:
    check_the_fleet([served.url])


@pytest.fixture
def two_served(pg_url: str, tmp_path: Path) -> Iterator[list[fleet_sim.Served]]:
    fleet_sim.make_repo(tmp_path / "repo")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        fleet_sim.serve(tmp_path / "repo", pg_url, tmp_path / "a") as a,
        fleet_sim.serve(tmp_path / "repo", pg_url, tmp_path / "b") as b,
    ):
        yield [a, b]


def test_two_server_processes_on_one_postgresql_give_the_same_ground_truth(
    two_served: list[fleet_sim.Served],
) -> None:
    check_the_fleet([s.url for s in two_served])


def check_the_fleet(urls: list[str]) -> None:
    """Simulate the fleet through ``urls``; every query, from each of them, says the truth."""
    hosts = fleet_sim.fleet(HOSTS, SEED)
    states = Counter(h.state for h in hosts)
    assert min(states[s] for s in ("patched", "unpatched", "failed", "unsupported")) > 100

    outcome = asyncio.run(fleet_sim.simulate(urls, hosts, CONCURRENCY, limit=LIMIT))
    assert not outcome.errors
    assert len(outcome.tokens) == len(outcome.directives) == HOSTS
    for h in hosts:
        assert outcome.directives[h.host_id] == {"max_level": h.directive(), "unroll": False}

    truth = {h.host_id: h for h in hosts}
    for url in urls:
        check_hosts_list(url, truth)
        check_exposure(url, hosts)
        check_summary(url, hosts)
        check_exports(url, truth)
    check_no_report_for_another_host(urls[-1], hosts, outcome.tokens)


def check_hosts_list(url: str, truth: dict[str, SimHost]) -> None:
    listed = get_all(url, "/api/v1/hosts")
    assert sorted(h["host_id"] for h in listed) == sorted(truth)
    for got in listed:
        h = truth[got["host_id"]]
        assert got["kernel"] == {"release": h.kernel.release, "build_id": h.kernel.build_id}
        assert (got["channel"], got["level"], got["state"]) == (h.kernel.channel, h.level, h.state)
        assert got["attempted_level"] == h.attempted_level
        assert tuple(got["tags"]) == h.tags
    # The counts an operator reads off the list, per build/level/state and per tag.
    per_group = Counter((g["kernel"]["build_id"], g["level"], g["state"]) for g in listed)
    assert per_group == Counter((h.kernel.build_id, h.level, h.state) for h in truth.values())
    per_tag = Counter(t for g in listed for t in g["tags"])
    assert per_tag == Counter(t for h in truth.values() for t in h.tags)
    # The list's own filters agree with the ground truth.
    some = next(h for h in truth.values() if h.state == "patched" and h.kernel.channel == "testing")
    filters: dict[str, Any] = {
        "tag=ring:0": lambda h: "ring:0" in h.tags,
        "state=failed": lambda h: h.state == "failed",
        f"build_id={some.kernel.build_id}&channel=testing&level={some.level}": lambda h: (
            h.kernel == some.kernel and h.level == some.level
        ),
    }
    for query, wanted in filters.items():
        found = get_all(url, f"/api/v1/hosts?{query}")
        assert sorted(h["host_id"] for h in found) == sorted(
            i for i, h in truth.items() if wanted(h)
        ), query


def check_exposure(url: str, hosts: list[SimHost]) -> None:
    for cve in (*CVES, "CVE-2026-9999"):  # the last one: fixed by no level at all
        answer = exposure_all(url, cve)
        exposed = {h.host_id for h in hosts if h.exposed_to(cve)}
        no_fix = {h.host_id for h in hosts if h.kernel.fixed_by(cve) is None}
        fixed = {h.host_id for h in hosts} - exposed - no_fix
        assert {h["host_id"] for h in answer["exposed"]} == exposed, cve
        assert {h["host_id"] for h in answer["no_fix"]} == no_fix, cve
        assert {h["host_id"] for h in answer["fixed"]} == fixed, cve
        assert answer["counts"] == {
            "exposed": len(exposed),
            "partial": 0,  # no host reports userspace rows
            "no_fix": len(no_fix),
            "fixed": len(fixed),
        }
        builds = {(b["build_id"], b["channel"], b["level"]) for b in answer["builds_with_fix"]}
        assert builds == {
            (k.build_id, k.channel, k.fixed_by(cve)) for k in fleet_sim.KERNELS if k.fixed_by(cve)
        }
    # At least one CVE leaves hosts in each of the three kinds: the check is not vacuous.
    assert any(h.exposed_to("CVE-2026-0002") for h in hosts)


def check_summary(url: str, hosts: list[SimHost]) -> None:
    answer = get(url, "/api/v1/summary")
    states = Counter(h.state for h in hosts)
    totals = answer["totals"]
    assert totals["hosts"] == totals["active"] == HOSTS
    assert totals["inactive"] == 0
    assert totals["by_state"] == {
        s: states[s] for s in ("patched", "unpatched", "failed", "unsupported")
    }
    assert (totals["failed"], totals["unsupported"]) == (states["failed"], states["unsupported"])
    groups = Counter(
        {
            (g["kernel"]["release"], g["kernel"]["build_id"], g["level"], g["state"]): g["hosts"]
            for g in answer["groups"]
        }
    )
    assert groups == Counter((h.kernel.release, h.kernel.build_id, h.level, h.state) for h in hosts)
    failed = {h.host_id: h for h in hosts if h.state == "failed"}
    assert len(answer["failures"]) == min(len(failed), 1000)
    for f in answer["failures"]:
        assert f["attempted_level"] == failed[f["host_id"]].attempted_level


def fixed_in_memory(h: SimHost) -> list[str]:
    live = h.level if h.state in ("patched", "failed") else 0
    return sorted(c for cves in h.kernel.fixes[:live] for c in cves)


def check_exports(url: str, truth: dict[str, SimHost]) -> None:
    rows = get_all(url, "/api/v1/export?format=json")
    assert len(rows) == HOSTS
    for row in rows:
        h = truth[row["host_id"]]
        assert (row["level"], row["state"], row["channel"]) == (h.level, h.state, h.kernel.channel)
        assert tuple(row["tags"]) == h.tags
        assert row["cves_fixed"] == fixed_in_memory(h)
    table = list(csv.DictReader(io.StringIO(csv_all(url))))
    assert len(table) == HOSTS
    for row in table:
        h = truth[row["host_id"]]
        assert (row["build_id"], row["level"], row["state"]) == (
            h.kernel.build_id,
            str(h.level),
            h.state,
        )
        assert row["tags"].split() == list(h.tags)
        assert row["cves_fixed"].split() == fixed_in_memory(h)
    assert set(KEYS) == {"prod", "canary", "dev"}  # the tags above come from these keys


def check_no_report_for_another_host(
    url: str, hosts: list[SimHost], tokens: dict[str, str]
) -> None:
    me, other = hosts[0], hosts[1]
    forged = me.checkin(host_id=other.host_id)
    forged.update(level=0, state="unpatched", attempted_level=0, last_error=None, patches=[])
    status, body = call(url, "/api/v1/checkin", tokens[me.host_id], forged)
    assert status == 403, body
    assert json.loads(body)["error"] == "forbidden"
    status, _ = call(url, "/api/v1/checkin", "sht_not-a-token", other.checkin())
    assert status == 401
    status, _ = call(url, "/api/v1/checkin", ADMIN_TOKEN, other.checkin())
    assert status == 401  # the admin token is not a host token
    # The other host's record is as it reported it, and its own token still works.
    record = get(url, f"/api/v1/hosts/{other.host_id}")["host"]
    assert (record["level"], record["state"]) == (other.level, other.state)
    status, body = call(url, "/api/v1/checkin", tokens[other.host_id], other.checkin())
    assert status == 200
    assert json.loads(body)["directive"]["max_level"] == other.directive()
