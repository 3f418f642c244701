"""suture.agent.cycle: the update cycle against a real repository on disk, with a fake kernel."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from suture.agent import cycle, state
from suture.agent.config import AgentConfig
from suture.agent.cycle import Outcome
from suture.errors import ConfigError, FetchError, TransitionError
from suture.kernel.identity import KernelIdentity
from suture.repo import create
from tests.support.agent import FakeKernel, Killed, name, publish_level
from tests.support.kernel import identity
from tests.support.repo import BUILD_A, BUILD_B, RELEASE


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
    )


def bundles(cfg: AgentConfig) -> list[str]:
    return sorted(p.name for p in (cfg.state_dir / "bundles").iterdir())


def test_applies_each_new_level_then_is_up_to_date(repo: Path, cfg: AgentConfig) -> None:
    kernel = FakeKernel()
    publish_level(repo, 1)
    r = cycle.run_update(cfg, kernel=kernel, clock=lambda: 100.0)
    assert (r.outcome, r.level, r.previous, r.name, r.cves) == (
        Outcome.APPLIED,
        1,
        0,
        name(1),
        ("CVE-2026-1001",),
    )
    publish_level(repo, 2)
    r = cycle.run_update(cfg, kernel=kernel)
    assert (r.outcome, r.level, r.previous, r.superseded) == (Outcome.APPLIED, 2, 1, (name(1),))
    r = cycle.run_update(cfg, kernel=kernel)
    assert (r.outcome, r.level, r.available) == (Outcome.UP_TO_DATE, 2, 2)
    assert kernel.applied == [1, 2]
    assert kernel.live == {name(2)}
    s = state.read(cfg.state_dir)
    assert s.applied is not None
    assert (s.applied.level, s.applied.patch, s.applied.release, s.applied.build_id) == (
        2,
        name(2),
        RELEASE,
        BUILD_A,
    )
    assert s.applied.bundle == cfg.state_dir / "bundles" / f"{name(2)}-L2.bundle"
    assert (s.last_result, s.last_error, s.in_progress) == ("up-to-date", None, None)
    assert bundles(cfg) == [f"{name(2)}-L2.bundle"]  # the superseded copy is gone


def test_the_sticky_level_is_never_exceeded(repo: Path, cfg: AgentConfig) -> None:
    for level in (1, 2, 3):
        publish_level(repo, level)
    kernel = FakeKernel()
    sticky = replace(cfg, sticky_level=2)
    r = cycle.run_update(sticky, kernel=kernel)
    assert (r.outcome, r.level, r.available, r.cves) == (
        Outcome.APPLIED,
        2,
        2,
        ("CVE-2026-1002",),
    )
    assert cycle.run_update(sticky, kernel=kernel).outcome is Outcome.UP_TO_DATE
    assert cycle.check(sticky, kernel=kernel).outcome is Outcome.UP_TO_DATE
    assert cycle.check(cfg, kernel=kernel).outcome is Outcome.PENDING
    assert cycle.run_update(cfg, kernel=kernel).level == 3
    assert kernel.applied == [2, 3]


def test_a_sticky_level_below_every_published_one_offers_nothing(
    repo: Path, cfg: AgentConfig
) -> None:
    publish_level(repo, 3)
    r = cycle.run_update(replace(cfg, sticky_level=2), kernel=FakeKernel())
    assert r.outcome is Outcome.NO_PATCHES


def test_no_patches_for_another_build_or_channel(repo: Path, cfg: AgentConfig) -> None:
    publish_level(repo, 1)
    kernel = FakeKernel(identity(build_id=BUILD_B))
    r = cycle.run_update(cfg, kernel=kernel)
    assert (r.outcome, r.level, r.build_id) == (Outcome.NO_PATCHES, 0, BUILD_B)
    assert cycle.run_update(replace(cfg, channel="testing"), kernel=FakeKernel()).outcome is (
        Outcome.NO_PATCHES
    )
    assert kernel.applied == []
    assert state.read(cfg.state_dir).last_result == "no-patches"


def test_the_testing_channel_is_separate(repo: Path, cfg: AgentConfig) -> None:
    publish_level(repo, 1)
    publish_level(repo, 5, channel="testing")
    r = cycle.run_update(replace(cfg, channel="testing"), kernel=FakeKernel())
    assert (r.outcome, r.level) == (Outcome.APPLIED, 5)


@pytest.mark.parametrize(
    "ident", [identity(build_id=BUILD_A, livepatch=False), identity(build_id="")]
)
def test_an_unsupported_kernel_asks_no_repository(cfg: AgentConfig, ident: KernelIdentity) -> None:
    offline = replace(cfg, server="")  # would be a ConfigError if it were used
    assert cycle.run_update(offline, kernel=FakeKernel(ident)).outcome is Outcome.UNSUPPORTED
    assert cycle.check(offline, kernel=FakeKernel(ident)).outcome is Outcome.UNSUPPORTED
    assert state.read(cfg.state_dir).last_result == "unsupported"


def test_a_failed_apply_is_recorded_and_the_old_level_kept(repo: Path, cfg: AgentConfig) -> None:
    kernel = FakeKernel()
    publish_level(repo, 1)
    cycle.run_update(cfg, kernel=kernel)
    publish_level(repo, 2)
    kernel.fail = TransitionError("did not finish", hint="apply again later")
    with pytest.raises(TransitionError):
        cycle.run_update(cfg, kernel=kernel, clock=lambda: 500.0)
    s = state.read(cfg.state_dir)
    assert s.applied is not None
    assert s.applied.level == 1
    assert s.in_progress is None
    assert (s.last_check, s.last_result) == (500.0, "error")
    assert s.last_error == {
        "error": "transition",
        "message": "did not finish",
        "hint": "apply again later",
    }
    assert bundles(cfg) == [f"{name(1)}-L1.bundle"]
    kernel.fail = None
    r = cycle.run_update(cfg, kernel=kernel)
    assert (r.outcome, r.level) == (Outcome.APPLIED, 2)
    assert state.read(cfg.state_dir).last_error is None


def test_an_unreachable_repository_is_recorded(cfg: AgentConfig, tmp_path: Path) -> None:
    gone = replace(cfg, server=(tmp_path / "nowhere").as_uri())
    with pytest.raises(FetchError):
        cycle.run_update(gone, kernel=FakeKernel())
    s = state.read(cfg.state_dir)
    assert s.last_error is not None
    assert s.last_error["error"] == "fetch"


def test_configuration_gaps_are_config_errors(cfg: AgentConfig, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no patch server") as e:
        cycle.run_update(replace(cfg, server=""), kernel=FakeKernel())
    assert e.value.key == "server"
    with pytest.raises(ConfigError, match="trusted root") as e:
        cycle.check(replace(cfg, trusted_root=tmp_path / "absent.json"), kernel=FakeKernel())
    assert e.value.key == "trusted_root"


def test_a_run_killed_after_the_kernel_switched_is_finished(repo: Path, cfg: AgentConfig) -> None:
    kernel = FakeKernel()
    publish_level(repo, 1)
    cycle.run_update(cfg, kernel=kernel)
    publish_level(repo, 2)
    kernel.killed = True
    with pytest.raises(Killed):
        cycle.run_update(cfg, kernel=kernel)
    mark = state.read(cfg.state_dir).in_progress
    assert mark is not None
    assert (mark.level, mark.patch) == (2, name(2))
    kernel.killed = False
    r = cycle.run_update(cfg, kernel=kernel)
    assert (r.outcome, r.level, r.recovered) == (Outcome.UP_TO_DATE, 2, True)
    assert kernel.applied == [1, 2]  # recorded, not applied twice
    s = state.read(cfg.state_dir)
    assert s.in_progress is None
    assert s.applied is not None
    assert (s.applied.level, s.applied.bundle.exists()) == (2, True)


def test_a_run_killed_before_the_kernel_switched_applies_again(
    repo: Path, cfg: AgentConfig
) -> None:
    publish_level(repo, 1)
    kernel = FakeKernel(killed=True)
    with pytest.raises(Killed):
        cycle.run_update(cfg, kernel=kernel)
    kernel.live.clear()  # e.g. the engine never loaded it, or a reboot
    kernel.killed = False
    r = cycle.run_update(cfg, kernel=kernel)
    assert (r.outcome, r.level, r.recovered) == (Outcome.APPLIED, 1, True)
    assert kernel.applied == [1, 1]
    assert state.read(cfg.state_dir).in_progress is None


def test_after_a_reboot_the_level_is_applied_again(repo: Path, cfg: AgentConfig) -> None:
    publish_level(repo, 1)
    cycle.run_update(cfg, kernel=FakeKernel())
    r = cycle.run_update(cfg, kernel=FakeKernel())  # same build, no live patches
    assert (r.outcome, r.previous, r.level) == (Outcome.APPLIED, 0, 1)


def test_the_update_delay_holds_a_new_level_back(repo: Path, cfg: AgentConfig) -> None:
    publish_level(repo, 1)
    delayed = replace(cfg, update_delay_hours=2)
    kernel = FakeKernel()
    r = cycle.run_update(delayed, kernel=kernel, clock=lambda: 1000.0)
    assert (r.outcome, r.available, r.level) == (Outcome.PENDING, 1, 0)
    r = cycle.run_update(delayed, kernel=kernel, clock=lambda: 1000.0 + 7199)
    assert r.outcome is Outcome.PENDING
    r = cycle.run_update(delayed, kernel=kernel, clock=lambda: 1000.0 + 7200)
    assert r.outcome is Outcome.APPLIED
    publish_level(repo, 2)
    assert cycle.run_update(delayed, kernel=kernel, clock=lambda: 9000.0).outcome is (
        Outcome.PENDING
    )
    r = cycle.run_update(delayed, kernel=kernel, clock=lambda: 9001.0, honour_delay=False)
    assert (r.outcome, r.level) == (Outcome.APPLIED, 2)


def test_check_reports_the_offer_and_changes_nothing(repo: Path, cfg: AgentConfig) -> None:
    publish_level(repo, 1)
    kernel = FakeKernel()
    r = cycle.check(cfg, kernel=kernel)
    assert (r.outcome, r.level, r.available, r.cves) == (
        Outcome.PENDING,
        0,
        1,
        ("CVE-2026-1001",),
    )
    assert kernel.applied == []
    assert not (cfg.state_dir / "state.json").exists()
    assert r.to_dict()["format"] == 1
    assert r.to_dict()["outcome"] == "pending"
