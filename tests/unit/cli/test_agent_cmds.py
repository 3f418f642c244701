"""suture update / info / uname: exit codes, JSON output, the effective release."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from suture.agent import boot, cycle, state
from suture.agent.config import ENVIRONMENT
from suture.cli.main import main
from suture.kernel import engine, livepatch
from suture.kernel import identity as identity_module
from suture.repo import create, publish
from tests.support.agent import FakeKernel, name, publish_level
from tests.support.kernel import identity
from tests.support.repo import BUILD_A, BUILD_B, RELEASE, make_bundle


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "agent.toml").write_text("format = 1\n")
    monkeypatch.setenv("SUTURE_AGENT_CONFIG", str(tmp_path / "agent.toml"))
    for var in ENVIRONMENT:
        monkeypatch.delenv(var, raising=False)
    create.init(tmp_path / "repo")
    return tmp_path / "repo"


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> FakeKernel:
    fake = FakeKernel()
    monkeypatch.setattr(cycle, "HostKernel", lambda: fake)
    return fake


def run(repo: Path, *argv: str) -> int:
    options = [
        f"--server={repo.as_uri()}",
        f"--trusted-root={repo / 'metadata/1.root.json'}",
        f"--state-dir={repo.parent / 'state'}",
    ]
    return main([*argv, *options])


def test_update_and_info_exit_codes(
    repo: Path, kernel: FakeKernel, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(repo, "info") == 1
    assert run(repo, "update") == 1
    assert "no live patches for" in capsys.readouterr().out
    publish_level(repo, 1)
    assert run(repo, "info", "--json") == 2
    data = json.loads(capsys.readouterr().out)
    assert (data["format"], data["outcome"], data["available"]) == (1, "pending", 1)
    assert data["cves"] == ["CVE-2026-1001"]
    assert run(repo, "update", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["ok"], data["outcome"], data["level"]) == (True, "applied", 1)
    assert run(repo, "update") == 0
    assert "up to date: level 1 is live" in capsys.readouterr().out
    assert run(repo, "info") == 0
    kernel.ident = identity(build_id=BUILD_A, livepatch=False)
    assert run(repo, "update") == 3
    assert run(repo, "info") == 3


@pytest.mark.parametrize(
    ("test", "shown"),
    [
        ("passed", "passed in the lab on this build"),
        ("failed", "FAILED its lab test (published with --untested)"),
        (None, "not tested"),
    ],
)
def test_info_says_whether_the_offered_level_was_tested(
    repo: Path,
    kernel: FakeKernel,
    capsys: pytest.CaptureFixture[str],
    test: str | None,
    shown: str,
) -> None:
    bundle = make_bundle(repo.parent, 1, name=name(1), test=test)
    publish.publish(repo, bundle, untested=True)
    assert run(repo, "info") == 2
    assert f"tested:  {shown}" in capsys.readouterr().out
    assert run(repo, "info", "--json") == 2
    assert json.loads(capsys.readouterr().out)["tested"] == (test or "untested")
    assert run(repo, "update") == 0
    assert f"tested:  {shown}" in capsys.readouterr().out
    assert run(repo, "update") == 0  # the answer kept from the last full check says it too
    assert "up to date: level 1 is live" in (out := capsys.readouterr().out)
    assert f"tested:  {shown}" in out


def test_update_errors_keep_their_exit_codes(
    repo: Path, kernel: FakeKernel, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["update", f"--state-dir={repo.parent / 'state'}"]) == 64
    assert "no patch server is configured" in capsys.readouterr().err
    assert main(["update", "--server", "ftp://x", "--json"]) == 64
    assert json.loads(capsys.readouterr().out)["key"] == "server"
    root = f"--trusted-root={repo / 'metadata/1.root.json'}"
    gone = f"--server={(repo.parent / 'nowhere').as_uri()}"
    state = f"--state-dir={repo.parent / 'state'}"
    assert main(["update", gone, root, state, "--retries=0"]) == 71


def test_uname(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    live: set[str] = set()

    class Sysfs:
        def states(self) -> list[livepatch.PatchState]:
            return [livepatch.PatchState(n, True, False, True, ()) for n in live]

    monkeypatch.setattr(identity_module, "read_identity", lambda: identity(build_id=BUILD_A))
    monkeypatch.setattr(livepatch, "LivepatchSysfs", Sysfs)
    folder = ["--state-dir", str(tmp_path)]
    assert main(["uname", "-r", *folder]) == 0
    assert capsys.readouterr().out == f"{RELEASE}\n"
    applied = state.Applied(3, "fix_l3", tmp_path / "b", RELEASE, BUILD_A, 0.0)
    state.write(tmp_path, state.AgentState(applied=applied))
    assert main(["uname", "-r", *folder]) == 0
    assert capsys.readouterr().out == f"{RELEASE}\n"  # recorded, but not live
    live.add("fix_l3")
    assert main(["uname", "-r", *folder]) == 0
    assert capsys.readouterr().out == f"{RELEASE}+suture.L3\n"
    assert main(["uname", "-a", *folder]) == 0
    u = os.uname()
    assert capsys.readouterr().out == (
        f"{u.sysname} {u.nodename} {RELEASE}+suture.L3 {u.version} {u.machine} GNU/Linux\n"
    )
    assert main(["uname", *folder]) == 0
    assert capsys.readouterr().out == f"{u.sysname}\n"
    assert main(["uname", "--json", *folder]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["effective_release"], data["level"]) == (f"{RELEASE}+suture.L3", 3)
    state.write(
        tmp_path,
        state.AgentState(applied=replace(applied, build_id=BUILD_B)),
    )
    assert main(["uname", "-r", *folder]) == 0
    assert capsys.readouterr().out == f"{RELEASE}\n"  # applied on another build


def test_the_agent_commands_stay_light() -> None:
    code = (
        "import sys; from suture.cli import main; main.build_parser(); "
        "print(sorted(m for m in sys.modules if m.startswith(('tuf', 'suture.agent.cycle'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    # The boot re-apply runs before the network, on every boot: no TUF, no HTTP client.
    code = (
        "import sys; import suture.agent.boot; "
        "print(sorted(m for m in sys.modules if m.startswith(('tuf', 'urllib3', 'elftools'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_status_shows_the_agent_and_exits_as_its_last_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = identity(build_id=BUILD_A).to_dict()
    patch = {"name": "fix_l2", "enabled": True, "transition": False, "replace": True}
    monkeypatch.setattr(
        engine,
        "status",
        lambda: {"format": 1, "kernel": kernel, "patches": [patch | {"objects": []}]},
    )
    applied = state.Applied(2, "fix_l2", tmp_path / "b", RELEASE, BUILD_A, 0.0, cves=("CVE-1",))
    folder = ["--state-dir", str(tmp_path)]
    for result, code in (("up-to-date", 0), ("no-patches", 1), ("pending", 2), ("error", 4)):
        error = {"error": "fetch", "message": "down"} if result == "error" else None
        current = state.AgentState(applied, last_check=5.0, last_result=result, last_error=error)
        state.write(tmp_path, current)
        assert main(["status", *folder]) == code, result
        out = capsys.readouterr().out
        assert "level:     2 (6.1.0-56-amd64+suture.L2)" in out
        assert "fixes:     CVE-1" in out
        assert (f": {result}" in out) and (("error:     down" in out) == (result == "error"))
    held = state.Held(3, "fix_l3", RELEASE, BUILD_A, "the host went down", 9.0)
    state.write(tmp_path, state.AgentState(applied, held=held, last_check=9.0, last_result="held"))
    assert main(["status", "--json", *folder]) == 4
    agent = json.loads(capsys.readouterr().out)["agent"]
    assert (agent["level"], agent["cves"], agent["held"]["level"]) == (2, ["CVE-1"], 3)


def test_boot_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeKernel()
    monkeypatch.setattr(boot, "HostKernel", lambda: fake)
    assert main(["boot", "--state-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["outcome"] == "nothing"
    applied = state.Applied(1, "fix_l1", tmp_path / "b", RELEASE, BUILD_A, 0.0, boot_id="old")
    state.write(tmp_path, state.AgentState(applied))
    assert main(["boot", "--state-dir", str(tmp_path)]) == 4
    assert "NOT re-applied" in capsys.readouterr().out
