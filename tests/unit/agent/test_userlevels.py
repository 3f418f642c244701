"""The agent's userspace levels and the re-apply of new processes, without processes."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from suture.agent import daemon, report, userlevels
from suture.agent.config import AgentConfig
from suture.agent.state import AgentState
from suture.contract import checkin
from suture.userspace import patcher, watch
from tests.support.agent import FakeKernel
from tests.support.kernel import identity


def _exec_event(tgid: int, what: int = watch.PROC_EVENT_EXEC) -> bytes:
    event = struct.pack("=IIQ", what, 0, 0) + struct.pack("=ii", tgid + 1, tgid)
    cn = struct.pack("=IIIIHH", 1, 1, 0, 0, len(event), 0) + event
    return struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn


def test_exec_events_are_read_from_a_netlink_datagram() -> None:
    data = _exec_event(41) + _exec_event(7, what=0x1) + _exec_event(99)  # a fork between
    assert watch.parse_exec_events(data) == [41, 99]
    assert watch.parse_exec_events(b"\0" * 8) == []


def test_a_new_process_is_looked_at_again_until_it_maps_the_library() -> None:
    looked: list[int] = []
    r = watch.Reapplier([], select=lambda pid: pid != 3)
    r._mapped = looked.append  # type: ignore[method-assign, assignment]
    r.started([1, 3], now=100.0)
    assert r.next_due() == 100.0 + watch.FIRST_LOOK and len(r._queue) == 1  # 3 is not ours
    assert r.run_due(now=99.0) == [] and looked == []
    r.run_due(now=100.0 + watch.FIRST_LOOK)
    assert looked == [1]


def test_levels_round_trip_and_the_checkin_says_partial(tmp_path: Path) -> None:
    lvl = userlevels.UserLevel(
        "libc.so.6", "ab" * 20, 2, "glibc_fix", tmp_path / "b", "00", ("CVE-2026-5928",),
        processes={"patched": 3, "unpatched": 1, "refused": {"init": 1}, "failed": 0},
    )  # fmt: skip
    userlevels.write(tmp_path, {lvl.build_id: lvl})
    assert userlevels.read(tmp_path) == {lvl.build_id: lvl}
    (row,) = userlevels.checkin_rows(tmp_path)
    assert (row["state"], row["level"], row["processes"]["refused"]) == ("partial", 2, {"init": 1})
    body = report.with_userspace({"format": 2, "level": 0}, [row])
    assert body["format"] == 3 and body["userspace"] == [row]
    # What the agent reports is a row the shared form takes, as the server reads it.
    (taken,) = checkin.parse({**report.checkin(identity(), AgentState(), set()), **body}).userspace
    assert (taken.state, taken.patched, taken.left, taken.cves) == ("partial", 3, 2, lvl.cves)
    (tmp_path / userlevels.STATE_NAME).write_text("{")
    assert userlevels.read(tmp_path) == {}


def test_an_outcome_crosses_from_a_worker() -> None:
    o = patcher.Outcome(5, "patched", level=2, pause_ms=0.5, inject_ms=0.25, seconds=0.001)
    assert patcher.Outcome.from_dict(o.to_dict()) == o


def test_the_daemon_follows_new_processes_once_a_userspace_level_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []

    class Follower:
        def __init__(self, state_dir: Path, log: object) -> None:
            made.append("made")

        def start(self) -> None:
            made.append("started")

        def refresh(self) -> None:
            made.append("refreshed")

        def close(self) -> None:
            made.append("closed")

    monkeypatch.setattr(userlevels, "Reapply", Follower)
    d = daemon.Daemon(AgentConfig(state_dir=tmp_path), kernel=FakeKernel())
    d._follow_new_processes()
    assert made == []  # no level: no thread, no userspace import
    lvl = userlevels.UserLevel("libc.so.6", "ab" * 20, 1, "fix", tmp_path / "b")
    userlevels.write(tmp_path, {lvl.build_id: lvl})
    d._follow_new_processes()
    d._follow_new_processes()
    assert made == ["made", "started", "refreshed"]
