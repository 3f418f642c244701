"""The agent's node exporter textfile: its content, and that the daemon writes it each cycle."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from suture.agent import config, daemon, metrics, state
from suture.agent.config import AgentConfig
from suture.errors import AgentStateError, ConfigError
from suture.repo import create
from tests.support.agent import FakeKernel, publish_level
from tests.support.kernel import identity
from tests.support.metrics import parse_exposition


@pytest.fixture
def cfg(tmp_path: Path) -> AgentConfig:
    repo = tmp_path / "repo"
    create.init(repo)
    return AgentConfig(
        server=repo.as_uri(),
        state_dir=tmp_path / "state",
        trusted_root=repo / "metadata" / "1.root.json",
        retries=0,
        metrics_file=str(tmp_path / "textfile" / "suture.prom"),
    )


def test_the_daemon_writes_the_textfile_after_each_cycle(cfg: AgentConfig) -> None:
    publish_level(cfg.trusted_root.parent.parent, 1)
    kernel = FakeKernel()
    daemon.Daemon(replace(cfg, check_interval=0, check_jitter=0), kernel=kernel).run(max_cycles=1)
    path = Path(cfg.metrics_file)
    assert path.stat().st_mode & 0o777 == 0o644  # the node exporter runs as another user
    samples = parse_exposition(path.read_text())
    ident = kernel.identity()
    assert (
        samples[f'suture_agent_level{{release="{ident.release}",build_id="{ident.build_id}"}}'] == 1
    )
    assert samples['suture_agent_last_result{result="applied"}'] == 1
    assert samples['suture_agent_last_result{result="error"}'] == 0
    assert samples["suture_agent_held"] == 0
    assert samples["suture_agent_livepatch_supported"] == 1
    last_check = state.read(cfg.state_dir).last_check
    assert samples["suture_agent_last_check_timestamp_seconds"] == last_check
    assert not list(path.parent.glob(".*"))  # no temporary file left behind


def test_an_unsupported_kernel_and_a_hold_show() -> None:
    held = state.Held(2, "p", "r", "b", "crashed", 1.0)
    text = metrics.render(
        state.AgentState(last_result="held", held=held), identity(livepatch=False), set()
    )
    samples = parse_exposition(text)
    assert samples["suture_agent_livepatch_supported"] == 0
    assert samples["suture_agent_held"] == 1
    assert samples['suture_agent_last_result{result="held"}'] == 1
    assert samples["suture_agent_last_check_timestamp_seconds"] == 0


def test_off_by_default_and_a_failed_write_never_fails_the_cycle(
    cfg: AgentConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert not metrics.write(replace(cfg, metrics_file=""), FakeKernel())
    blocked = tmp_path / "file"
    blocked.write_text("")
    bad = replace(cfg, metrics_file=str(blocked / "suture.prom"), check_interval=0)
    daemon.Daemon(bad, kernel=FakeKernel()).run(max_cycles=1)
    assert "cannot write the metrics file" in caplog.text


def test_metrics_file_must_be_absolute_or_empty() -> None:
    assert config.checked(AgentConfig(), {"metrics_file": ""}).metrics_file == ""
    assert config.checked(AgentConfig(), {"metrics_file": "/x/s.prom"}).metrics_file == "/x/s.prom"
    with pytest.raises(ConfigError):
        config.checked(AgentConfig(), {"metrics_file": "relative.prom"})


@pytest.mark.skipif(os.geteuid() != 0, reason="the agent refuses such folders as root")
def test_root_does_not_write_metrics_into_a_folder_another_user_owns(
    cfg: AgentConfig, tmp_path: Path
) -> None:
    theirs = tmp_path / "prom"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    with pytest.raises(AgentStateError, match=r"not writing the metrics file.*uid 65534"):
        metrics.write(replace(cfg, metrics_file=str(theirs / "suture.prom")), FakeKernel())
    assert list(theirs.iterdir()) == []
