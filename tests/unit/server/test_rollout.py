"""Rollout control: the policy's arithmetic, then agents against a real server.

The end-to-end tests run real agent cycles (check-in, update, check-in) with
fake kernels against a real server and repository on loopback: a staged
rollout halts by itself when injected failures pass the threshold, and an
unroll brings hosts back to the earlier level.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from suture.errors import UsageError
from suture.repo import create
from suture.server import Server, open_server
from suture.server.fleet.catalog import LevelInfo
from suture.server.fleet.rollout import Policy, allowed_level, halt_reason, is_canary
from tests.support.agent import publish_level
from tests.support.repo import BUILD_A, RELEASE
from tests.support.server import ADMIN, admin, fleet

NOW = 1_000_000.0


def levels(*published: float | None) -> list[LevelInfo]:
    return [
        LevelInfo(RELEASE, BUILD_A, "stable", n, f"fix_l{n}", (f"CVE-{n}",), when)
        for n, when in enumerate(published, start=1)
    ]


# --- the policy's arithmetic -------------------------------------------------------------


def test_no_policy_allows_the_newest_level() -> None:
    assert allowed_level(Policy(), levels(None, NOW), "h", (), NOW) == 2
    assert allowed_level(Policy(), [], "h", (), NOW) is None  # no levels: no opinion


def test_delay_holds_a_level_back_after_publishing() -> None:
    policy = Policy(delay_hours=2)
    two = levels(NOW - 10 * 3600, NOW - 3600)
    assert allowed_level(policy, two, "h", (), NOW) == 1
    assert allowed_level(policy, two, "h", (), NOW + 3600) == 2


def test_staged_rollout_canaries_first_then_everyone() -> None:
    policy = Policy(canary_tags=("ring:0",), promoted_level=1, canary_hours=24)
    two = levels(NOW - 100 * 3600, NOW)
    assert allowed_level(policy, two, "h", ("ring:0",), NOW) == 2
    assert allowed_level(policy, two, "h", ("env:prod",), NOW) == 1
    assert allowed_level(policy, two, "h", (), NOW + 25 * 3600) == 2  # canary time is over
    share = Policy(canary_percent=30)
    canaries = sum(is_canary(share, f"host-{i}", ()) for i in range(1000))
    assert 250 < canaries < 350  # a stable ~30% by host id


def test_halt_unroll_and_sticky_cap_the_level() -> None:
    three = levels(None, None, None)
    assert allowed_level(Policy(halted_level=3), three, "h", (), NOW) == 2
    assert allowed_level(Policy(unroll_to=1), three, "h", (), NOW) == 1
    sticky = Policy(sticky={"env:prod": 2})
    assert allowed_level(sticky, three, "h", ("env:prod",), NOW) == 2
    assert allowed_level(sticky, three, "h", ("env:dev",), NOW) == 3


def test_halt_reason_needs_enough_attempts_and_failures() -> None:
    policy = Policy(failure_threshold=0.5, min_attempts=4)
    assert halt_reason(policy, 2, failed=2, succeeded=1) is None  # 3 tried: too few
    assert halt_reason(policy, 2, failed=1, succeeded=3) is None  # 25% failed
    assert halt_reason(policy, 2, failed=2, succeeded=2) == (
        "2 of 4 hosts that tried level 2 failed (threshold 50%)"
    )
    assert halt_reason(Policy(halted_level=2), 2, 9, 0) is None  # already halted
    assert halt_reason(Policy(resumed_level=2), 2, 9, 0) is None  # an operator resumed it


@pytest.mark.parametrize(
    "bad",
    [
        {"delay_hours": -1},
        {"canary_percent": 101},
        {"failure_threshold": 0},
        {"min_attempts": 0},
        {"sticky": {"env:prod": -1}},
        {"unroll_to": "1"},
        {"surprise": 1},
    ],
)
def test_bad_policies_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        Policy.from_dict(bad)


# --- agents against a real server ------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    create.init(tmp_path / "repo")
    srv = open_server(
        tmp_path / "repo",
        listen="127.0.0.1:0",
        db=f"sqlite:///{tmp_path}/s.db",
        log=[].append,
        admin_token=ADMIN,
    )
    srv.start(poll_interval=0.01)
    yield srv
    srv.stop()


def test_a_staged_rollout_halts_itself_then_an_unroll_brings_hosts_back(
    server: Server, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    hosts = fleet(server, tmp_path, count=12, canaries=4)
    policy = {"canary_tags": ["ring:0"], "failure_threshold": 0.5, "min_attempts": 3}
    admin(server, "PUT", "/api/v1/rollouts/stable", policy)
    publish_level(repo, 1)
    admin(server, "POST", "/api/v1/rollouts/stable/promote", {"level": 1})
    for h in hosts:
        h.cycle()
    assert [h.level() for h in hosts] == [1] * 12

    # Level 2 goes to the 4 canaries first; it fails on them (injected).
    publish_level(repo, 2)
    for h in hosts:
        h.cycle()
    assert [h.level() for h in hosts] == [1] * 12  # backed out everywhere it was tried
    tried = [h.kernel.applied for h in hosts]
    assert tried[:3] == [[1, 2]] * 3 and tried[4:] == [[1]] * 8  # only canaries tried
    halted = admin(server, "GET", "/api/v1/rollouts/stable")["policy"]
    # Halted by itself after 3 failures of 3 attempts, on the build that failed it (an
    # automatic halt holds one kernel build, not the channel: security-repro 02).
    halt = halted["build_halts"][f"{RELEASE}/{BUILD_A}"]
    assert (halted["halted_level"], halt["level"]) == (None, 2)
    assert halt["reason"] == "3 of 3 hosts that tried level 2 failed (threshold 50%)"
    assert tried[3] == [1]  # the 4th canary checked in after the halt: never tried level 2
    fleet_view = admin(server, "GET", "/api/v1/hosts")["hosts"]
    assert sorted(h["state"] for h in fleet_view) == ["failed"] * 3 + ["patched"] * 9

    # The fix is found: level 2 is good after all (say, a bad canary image), resume and
    # promote it; everyone moves up. Then the operator unrolls to level 1.
    for h in hosts:
        h.kernel.bad_level = 0
    admin(server, "POST", "/api/v1/rollouts/stable/resume", {})
    admin(server, "POST", "/api/v1/rollouts/stable/promote", {"level": 2})
    for h in hosts:
        h.cycle()
    assert [h.level() for h in hosts] == [2] * 12
    admin(server, "POST", "/api/v1/rollouts/stable/unroll", {"level": 1})
    for h in hosts:
        h.cycle()
    assert [h.level() for h in hosts] == [1] * 12
    assert all(h["level"] == 1 for h in admin(server, "GET", "/api/v1/hosts")["hosts"])
    # Ending the unroll lets them climb again.
    admin(server, "POST", "/api/v1/rollouts/stable/unroll", {"level": None})
    for h in hosts:
        h.cycle()
    assert [h.level() for h in hosts] == [2] * 12


def test_host_history_records_each_change(server: Server, tmp_path: Path) -> None:
    [h] = fleet(server, tmp_path, count=1, canaries=0)
    h.kernel.bad_level = 2
    publish_level(tmp_path / "repo", 1)
    h.cycle()
    publish_level(tmp_path / "repo", 2)
    h.cycle()
    history = admin(server, "GET", "/api/v1/hosts/host-00")["history"]
    states = [(e["level"], e["attempted_level"], e["state"]) for e in reversed(history)]
    assert states == [(0, 0, "unpatched"), (1, 1, "patched"), (1, 2, "failed")]
    assert "injected" in history[0]["last_error"]


def test_a_sticky_tag_keeps_hosts_down(server: Server, tmp_path: Path) -> None:
    hosts = fleet(server, tmp_path, count=2, canaries=1)  # host-00 ring:0, host-01 env:prod
    for h in hosts:
        h.kernel.bad_level = 0
    admin(server, "PUT", "/api/v1/rollouts/stable", {"sticky": {"env:prod": 1}})
    publish_level(tmp_path / "repo", 1)
    publish_level(tmp_path / "repo", 2)
    for h in hosts:
        h.cycle()
    assert [h.level() for h in hosts] == [2, 1]
