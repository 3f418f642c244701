"""A yanked level leaves the hosts: down to the newest level still offered, never back at boot.

Finding 13 of issue 14 (the kit's script 13): hosts at a yanked level kept
it, said "up to date", and `suture boot` applied it again after a reboot.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from suture.agent import boot, cycle, state
from suture.agent.config import AgentConfig
from suture.agent.outcome import BootOutcome, Outcome, exit_code
from suture.errors import TransitionError
from suture.repo import create, publish
from tests.support.agent import FakeKernel, name, publish_level
from tests.support.repo import BUILD_A, RELEASE


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
        crash_guard=0,
    )


def yank(repo: Path, level: int) -> None:
    publish.yank(repo, RELEASE, BUILD_A, level)


def test_a_yanked_live_level_goes_down_to_the_newest_still_offered(
    repo: Path, cfg: AgentConfig
) -> None:
    kernel = FakeKernel()
    publish_level(repo, 1)
    publish_level(repo, 2)
    assert cycle.run_update(cfg, kernel=kernel).level == 2
    yank(repo, 2)
    r = cycle.run_update(cfg, kernel=kernel)
    assert (r.outcome, r.level, r.previous, r.withdrawn) == (Outcome.APPLIED, 1, 2, 2)
    assert kernel.live == {name(1)}
    assert state.read(cfg.state_dir).is_withdrawn(RELEASE, BUILD_A, 2)
    again = cycle.run_update(cfg, kernel=kernel)
    assert (again.outcome, again.level) == (Outcome.UP_TO_DATE, 1)


def test_a_yanked_only_level_is_removed(repo: Path, cfg: AgentConfig) -> None:
    kernel = FakeKernel()
    publish_level(repo, 1)
    cycle.run_update(cfg, kernel=kernel)
    yank(repo, 1)
    r = cycle.run_update(cfg, kernel=kernel)
    assert (r.outcome, r.level, r.withdrawn, exit_code(r.outcome)) == (Outcome.REMOVED, 0, 1, 0)
    assert (kernel.live, kernel.unloaded) == (set(), [name(1)])
    s = state.read(cfg.state_dir)
    assert s.applied is None
    assert list((cfg.state_dir / "bundles").iterdir()) == []


def test_the_yank_is_remembered_before_the_kernel_is_touched(repo: Path, cfg: AgentConfig) -> None:
    # The unload fails (the transition did not finish): the host still runs
    # level 1, but neither the next boot nor a cycle applies it again.
    kernel = FakeKernel()
    publish_level(repo, 1)
    cycle.run_update(cfg, kernel=kernel)
    yank(repo, 1)
    kernel.fail = TransitionError("injected: the disable did not finish")
    with pytest.raises(TransitionError):
        cycle.run_update(cfg, kernel=kernel)
    assert state.read(cfg.state_dir).is_withdrawn(RELEASE, BUILD_A, 1)
    kernel.fail, kernel.live, kernel.boot = None, set(), "boot-2"  # a reboot
    b = boot.reapply(cfg, kernel=kernel)
    assert (b.outcome, kernel.applied, exit_code(b.outcome)) == (BootOutcome.WITHDRAWN, [1], 0)


def test_boot_does_not_bring_a_yanked_level_back(repo: Path, cfg: AgentConfig) -> None:
    kernel = FakeKernel()
    publish_level(repo, 1)
    publish_level(repo, 2)
    cycle.run_update(cfg, kernel=kernel)
    yank(repo, 2)
    cycle.run_update(cfg, kernel=kernel)
    cycle.run_update(cfg, kernel=kernel)  # level 1 outlives its probation (crash_guard 0)
    kernel.live, kernel.boot = set(), "boot-2"
    b = boot.reapply(cfg, kernel=kernel)
    assert (b.outcome, b.level, kernel.live) == (BootOutcome.REAPPLIED, 1, {name(1)})
    assert kernel.applied == [2, 1, 1]


def test_info_says_a_withdrawn_live_level_is_pending(repo: Path, cfg: AgentConfig) -> None:
    kernel = FakeKernel()
    publish_level(repo, 1)
    publish_level(repo, 2)
    cycle.run_update(cfg, kernel=kernel)
    yank(repo, 2)
    r = cycle.check(cfg, kernel=kernel)
    assert (r.outcome, r.level, r.available, r.withdrawn) == (Outcome.PENDING, 2, 1, 2)
    assert kernel.applied == [2]  # check changes nothing


def test_a_yank_of_a_level_not_live_changes_nothing(repo: Path, cfg: AgentConfig) -> None:
    kernel = FakeKernel()
    publish_level(repo, 1)
    publish_level(repo, 2)
    sticky = replace(cfg, sticky_level=1)
    cycle.run_update(sticky, kernel=kernel)
    yank(repo, 2)
    r = cycle.run_update(sticky, kernel=kernel)
    assert (r.outcome, r.level, r.withdrawn) == (Outcome.UP_TO_DATE, 1, 0)
    assert state.read(cfg.state_dir).withdrawn == ()
