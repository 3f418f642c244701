"""Boot re-apply, the crash-loop guard and the daemon's loop, with a fake kernel."""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from suture.agent import boot, cycle, daemon, state
from suture.agent.boot import BootOutcome
from suture.agent.config import AgentConfig
from suture.agent.cycle import Outcome
from suture.errors import AgentStateError, TransitionError
from suture.repo import create
from tests.support.agent import FakeKernel, name, publish_level
from tests.support.kernel import identity
from tests.support.repo import BUILD_B


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    create.init(tmp_path / "repo")
    return tmp_path / "repo"


@pytest.fixture
def cfg(repo: Path, tmp_path: Path) -> AgentConfig:
    return AgentConfig(
        server=repo.as_uri(),
        state_dir=tmp_path / "state",
        trusted_root=repo / "metadata" / "1.root.json",
        retries=0,
        crash_guard=600,
    )


def applied_at(cfg: AgentConfig, now: float, level: int = 1) -> FakeKernel:
    """A kernel on which the agent applied ``level`` at ``now`` (boot "boot-1")."""
    kernel = FakeKernel()
    for n in range(1, level + 1):
        publish_level(cfg.trusted_root.parent.parent, n)
    cycle.run_update(cfg, kernel=kernel, clock=lambda: now)
    return kernel


def rebooted(kernel: FakeKernel, boot_id: str = "boot-2") -> FakeKernel:
    """The same kernel build after a reboot: no live patches, a new boot id."""
    return replace(kernel, live=set(), applied=[], boot=boot_id)


def test_the_applied_level_records_its_boot_hash_and_cves(cfg: AgentConfig) -> None:
    applied_at(cfg, 1000.0)
    a = state.read(cfg.state_dir).applied
    assert a is not None
    assert (a.boot_id, a.confirmed, a.cves) == ("boot-1", False, ("CVE-2026-1001",))
    assert len(a.sha256) == 64


def test_a_level_is_confirmed_after_the_guard_time_in_the_same_boot(cfg: AgentConfig) -> None:
    kernel = applied_at(cfg, 1000.0)
    cycle.run_update(cfg, kernel=kernel, clock=lambda: 1000.0 + 599)
    assert not state.read(cfg.state_dir).applied.confirmed  # type: ignore[union-attr]
    cycle.run_update(cfg, kernel=kernel, clock=lambda: 1000.0 + 600)
    assert state.read(cfg.state_dir).applied.confirmed  # type: ignore[union-attr]


def test_boot_reapplies_a_confirmed_level(cfg: AgentConfig) -> None:
    kernel = applied_at(cfg, 1000.0)
    cycle.run_update(cfg, kernel=kernel, clock=lambda: 2000.0)  # confirmed
    after = rebooted(kernel)
    r = boot.reapply(cfg, kernel=after, clock=lambda: 5000.0)
    assert (r.outcome, r.level, after.applied) == (BootOutcome.REAPPLIED, 1, [1])
    a = state.read(cfg.state_dir).applied
    assert a is not None
    assert (a.boot_id, a.confirmed, a.applied_at) == ("boot-2", False, 5000.0)  # probation again
    assert boot.reapply(cfg, kernel=after).outcome == BootOutcome.LIVE


def test_boot_after_a_crash_in_probation_holds_the_level(cfg: AgentConfig) -> None:
    kernel = applied_at(cfg, 1000.0)
    after = rebooted(kernel)
    r = boot.reapply(cfg, kernel=after, clock=lambda: 1100.0)
    assert r.outcome == BootOutcome.HELD
    assert "probation" in r.reason
    assert after.applied == []  # nothing applied
    s = state.read(cfg.state_dir)
    assert s.held is not None
    assert (s.held.level, s.last_result) == (1, "held")
    # Updates do not apply the held level either, until an operator clears it.
    u = cycle.run_update(cfg, kernel=after)
    assert (u.outcome, u.available, after.applied) == (Outcome.HELD, 1, [])
    assert boot.reapply(cfg, kernel=rebooted(after, "boot-3")).outcome == BootOutcome.HELD
    u = cycle.run_update(cfg, kernel=after, clear_hold=True)
    assert (u.outcome, after.applied) == (Outcome.APPLIED, [1])
    assert state.read(cfg.state_dir).held is None


def test_a_newer_level_than_the_held_one_is_applied(cfg: AgentConfig) -> None:
    kernel = applied_at(cfg, 1000.0)
    after = rebooted(kernel)
    boot.reapply(cfg, kernel=after)
    publish_level(cfg.trusted_root.parent.parent, 2)
    assert cycle.run_update(cfg, kernel=after).outcome == Outcome.APPLIED
    assert after.applied == [2]


def test_a_clean_shutdown_is_not_a_crash(cfg: AgentConfig) -> None:
    kernel = applied_at(cfg, 1000.0)
    s = state.read(cfg.state_dir)
    state.write(cfg.state_dir, replace(s, clean_shutdown_boot="boot-1"))
    r = boot.reapply(cfg, kernel=rebooted(kernel))
    assert r.outcome == BootOutcome.REAPPLIED


def test_boot_on_another_kernel_or_with_nothing_applied(cfg: AgentConfig) -> None:
    assert boot.reapply(cfg, kernel=FakeKernel()).outcome == BootOutcome.NOTHING
    kernel = applied_at(cfg, 1000.0)
    other = FakeKernel(ident=identity(build_id=BUILD_B), boot="boot-2")
    assert boot.reapply(cfg, kernel=other).outcome == BootOutcome.OTHER_KERNEL
    assert other.applied == []
    unsupported = FakeKernel(ident=identity(livepatch=False), boot="boot-2")
    assert boot.reapply(cfg, kernel=unsupported).outcome == BootOutcome.UNSUPPORTED
    del kernel


def test_boot_refuses_an_altered_cached_bundle(cfg: AgentConfig) -> None:
    kernel = applied_at(cfg, 1000.0)
    cycle.run_update(cfg, kernel=kernel, clock=lambda: 2000.0)
    a = state.read(cfg.state_dir).applied
    assert a is not None
    a.bundle.write_bytes(a.bundle.read_bytes() + b"\0")
    after = rebooted(kernel)
    with pytest.raises(AgentStateError, match="changed since it was verified"):
        boot.reapply(cfg, kernel=after)
    a.bundle.unlink()
    with pytest.raises(AgentStateError, match="cannot be read"):
        boot.reapply(cfg, kernel=after)
    assert after.applied == []


def test_a_failed_reapply_is_recorded(cfg: AgentConfig) -> None:
    kernel = applied_at(cfg, 1000.0)
    cycle.run_update(cfg, kernel=kernel, clock=lambda: 2000.0)
    after = replace(rebooted(kernel), fail=TransitionError("stuck"))
    with pytest.raises(TransitionError):
        boot.reapply(cfg, kernel=after)
    s = state.read(cfg.state_dir)
    assert s.last_result == "error"
    assert s.last_error is not None
    assert s.last_error["error"] == "transition"


def test_the_daemon_cycles_notifies_and_records_a_clean_stop(
    cfg: AgentConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="suture")
    publish_level(cfg.trusted_root.parent.parent, 1)
    kernel = FakeKernel()
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        d = daemon.Daemon(replace(cfg, check_interval=0, check_jitter=0), kernel=kernel)
        d.run(max_cycles=2)
        messages = [sock.recv(4096).decode() for _ in range(4)]
    assert messages == [
        "READY=1",
        "STATUS=applied: level 1 live",
        "STATUS=up-to-date: level 1 live",
        "STOPPING=1",
    ]
    assert kernel.applied == [1]
    assert state.read(cfg.state_dir).clean_shutdown_boot == "boot-1"
    log = caplog.messages
    assert log[0].startswith("agent started") and log[-1] == "agent stopped"


def test_a_daemon_start_forgets_an_earlier_clean_stop(cfg: AgentConfig) -> None:
    cfg.state_dir.mkdir(parents=True)
    state.write(cfg.state_dir, state.AgentState(clean_shutdown_boot="boot-1"))
    seen: list[str] = []

    class Watching(FakeKernel):
        def live_patches(self) -> set[str]:
            seen.append(state.read(cfg.state_dir).clean_shutdown_boot)
            return super().live_patches()

    daemon.Daemon(cfg, kernel=Watching()).run(max_cycles=1)
    assert seen[0] == ""  # while it ran, no clean stop was on record


def test_stop_interrupts_the_wait_between_retries(
    cfg: AgentConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="suture")
    gone = replace(cfg, server=(tmp_path / "nowhere").as_uri(), retries=3, retry_backoff=30)
    d = daemon.Daemon(gone, kernel=FakeKernel())
    real_sleep = d._sleep

    def stop_then_sleep(seconds: float) -> None:
        d.stop()
        real_sleep(seconds)

    d._sleep = stop_then_sleep  # type: ignore[method-assign]
    d.run()
    assert any("stopping before the cycle finished" in m for m in caplog.messages), caplog.text
    assert d.cycles == 1


def test_sd_notify_without_systemd_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    daemon.sd_notify("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/socket")
    daemon.sd_notify("READY=1")  # a socket that is gone is not an error


def test_state_keeps_the_guard_fields(cfg: AgentConfig) -> None:
    applied_at(cfg, 1000.0)
    raw = json.loads((cfg.state_dir / "state.json").read_text())
    assert raw["applied"]["boot_id"] == "boot-1"
    assert raw["held"] is None
    assert name(1) == raw["applied"]["patch"]
