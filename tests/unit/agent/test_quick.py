"""suture.agent.quick: a no-change check reuses the last answer only while nothing can differ."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from suture.agent import cycle, state, update
from suture.agent.config import AgentConfig
from suture.agent.cycle import Outcome
from suture.errors import FetchError
from suture.repo import create
from tests.support.agent import FakeKernel, name, publish_level


def no_tuf(monkeypatch: pytest.MonkeyPatch) -> None:
    """The full check fails: only an answer without the TUF client gets through."""

    def refused(*args: object, **kwargs: object) -> None:
        raise FetchError("the TUF client was used")

    monkeypatch.setattr(update, "session", refused)


@pytest.fixture
def cfg(tmp_path: Path) -> AgentConfig:
    create.init(tmp_path / "repo")
    publish_level(tmp_path / "repo", 1)
    return AgentConfig(
        server=(tmp_path / "repo").as_uri(),
        state_dir=tmp_path / "state",
        trusted_root=tmp_path / "repo" / "metadata" / "1.root.json",
        retries=0,
    )


def repo(cfg: AgentConfig) -> Path:
    return cfg.trusted_root.parent.parent


def test_an_unchanged_repository_is_answered_without_the_tuf_client(
    cfg: AgentConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = FakeKernel()
    assert cycle.run_update(cfg, kernel=kernel).outcome == Outcome.APPLIED
    no_tuf(monkeypatch)
    r = cycle.run_update(cfg, kernel=kernel)
    assert (r.outcome, r.level, r.available, r.name, r.cves) == (
        Outcome.UP_TO_DATE,
        1,
        1,
        name(1),
        ("CVE-2026-1001",),
    )
    assert r.userspace == ()  # its userspace part did not need the TUF client either
    assert state.read(cfg.state_dir).last_result == "up-to-date"


def test_a_new_timestamp_takes_the_full_check(
    cfg: AgentConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = FakeKernel()
    cycle.run_update(cfg, kernel=kernel)
    publish_level(repo(cfg), 2)
    with monkeypatch.context() as m:
        no_tuf(m)
        with pytest.raises(FetchError):
            cycle.run_update(cfg, kernel=kernel)
    assert cycle.run_update(cfg, kernel=kernel).level == 2


@pytest.mark.parametrize(
    "change",
    ["channel", "sticky", "not-live", "other-build", "expired", "root-expired", "held"],
)
def test_anything_else_takes_the_full_check(
    cfg: AgentConfig, change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = FakeKernel()
    cycle.run_update(cfg, kernel=kernel)
    trusted = cfg.state_dir / "metadata"
    current = state.read(cfg.state_dir)
    if change == "channel":
        cfg = replace(cfg, channel="testing")
    elif change == "sticky":
        cfg = replace(cfg, sticky_level=5)
    elif change == "not-live":
        kernel.live.clear()
    elif change == "other-build":
        kernel.ident = replace(kernel.ident, release="6.1.0-99-amd64")
    elif change in ("expired", "root-expired"):
        path = trusted / ("timestamp.json" if change == "expired" else "root.json")
        data = json.loads(path.read_text())
        data["signed"]["expires"] = "2000-01-01T00:00:00Z"
        path.write_text(json.dumps(data))
        (repo(cfg) / "metadata" / "timestamp.json").write_text(path.read_text())
    elif change == "held":
        held = state.Held(1, name(1), kernel.ident.release, kernel.ident.build_id, "crash", 0.0)
        state.write(cfg.state_dir, replace(current, held=held))
    no_tuf(monkeypatch)
    with pytest.raises(FetchError):
        cycle.run_update(cfg, kernel=kernel)


def test_the_agent_loads_no_tuf_code_until_it_needs_it() -> None:
    code = (
        "import sys; import suture.agent.cycle, suture.agent.report, suture.cli.main; "
        "print(sorted(m for m in sys.modules "
        "if m.startswith(('tuf', 'urllib3', 'suture.agent.trust'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
