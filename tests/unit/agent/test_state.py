"""suture.agent.state: the agent's state file, its round trip, atomic writes and the lock."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest

from suture.agent import state
from suture.agent.state import AgentState, Applied, InProgress
from suture.errors import AgentStateError

BUILD = "0123456789abcdef0123456789abcdef01234567"
FULL = AgentState(
    applied=Applied(2, "fix_l2", Path("/s/bundles/fix_l2-L2.bundle"), "6.1.0-56-amd64", BUILD, 1e9),
    in_progress=InProgress(3, "fix_l3", Path("/s/bundles/fix_l3-L3.bundle"), 1.5e9),
    seen_level=3,
    seen_at=1.5e9,
    last_check=1.6e9,
    last_result="error",
    last_error={"error": "fetch", "message": "down", "hint": "retry"},
)


def test_a_missing_file_is_the_empty_state(tmp_path: Path) -> None:
    assert state.read(tmp_path / "nothing") == AgentState()


@pytest.mark.parametrize("value", [AgentState(), FULL])
def test_round_trip(tmp_path: Path, value: AgentState) -> None:
    state.write(tmp_path, value)
    assert state.read(tmp_path) == value
    data = json.loads((tmp_path / "state.json").read_text())
    assert data["format"] == 1


def test_the_file_is_readable_json_with_utc_times(tmp_path: Path) -> None:
    state.write(tmp_path, FULL)
    data = json.loads((tmp_path / "state.json").read_text())
    assert data["applied"]["level"] == 2
    assert data["applied"]["applied_at"] == "2001-09-09T01:46:40Z"
    assert data["in_progress"]["patch"] == "fix_l3"
    assert data["last_check"]["error"]["error"] == "fetch"


@pytest.mark.parametrize(
    "raw",
    [b"", b"[]", b'{"format": 2}', b'{"format": 1}', b"\xff", b'{"format": 1, "applied": 3}'],
)
def test_a_damaged_file_is_an_error(tmp_path: Path, raw: bytes) -> None:
    (tmp_path / "state.json").write_bytes(raw)
    with pytest.raises(AgentStateError, match="is damaged"):
        state.read(tmp_path)


def test_a_failed_write_keeps_the_old_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state.write(tmp_path, FULL)

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(AgentStateError, match="No space left"):
        state.write(tmp_path, AgentState())
    monkeypatch.undo()
    assert state.read(tmp_path) == FULL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_one_agent_at_a_time(tmp_path: Path) -> None:
    with state.locked(tmp_path):
        fd = os.open(tmp_path / ".lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(tmp_path / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
    finally:
        os.close(fd)


def test_an_unusable_state_folder_is_an_agent_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(AgentStateError, match="cannot lock"), state.locked(tmp_path / "file"):
        pass


def test_the_level_counts_only_on_its_own_build() -> None:
    assert FULL.level_for("6.1.0-56-amd64", BUILD) == 2
    assert FULL.level_for("6.1.0-56-amd64", "f" * 40) == 0
    assert FULL.level_for("6.1.0-55-amd64", BUILD) == 0
    assert AgentState().level_for("6.1.0-56-amd64", BUILD) == 0


@pytest.mark.parametrize(
    ("release", "live", "shown"),
    [
        ("6.1.0-56-amd64", {"fix_l2"}, "6.1.0-56-amd64+suture.L2"),
        ("6.1.0-56-amd64", set(), "6.1.0-56-amd64"),  # rebooted, or unloaded
        ("6.1.0-56-amd64", {"other"}, "6.1.0-56-amd64"),
        ("6.1.0-57-amd64", {"fix_l2"}, "6.1.0-57-amd64"),  # another kernel
    ],
)
def test_effective_release(release: str, live: set[str], shown: str) -> None:
    assert state.effective_release(release, BUILD, FULL, live) == shown
