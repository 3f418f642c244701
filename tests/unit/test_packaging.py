"""The systemd units (agent and server) and the example configuration that ship."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from suture.agent import config
from suture.cli import main
from tests.support.packaging import PACKAGING, UNITS, unit


def test_units_run_commands_the_cli_has() -> None:
    commands = {p.name: unit(p)["Service"]["ExecStart"].split()[1:] for p in UNITS}
    assert commands == {
        "suture-agent.service": ["daemon"],
        "suture-boot.service": ["boot"],
        "suture-repo-refresh.service": ["repo", "refresh", "--repo", "/srv/suture/repo"],
        "suture-server.service": [
            "serve",
            "--config",
            "/etc/suture/server.toml",
            "--admin-token-file",
            "/var/lib/suture-server/admin-token",
        ],
    }
    parser = main.build_parser()
    for argv in commands.values():
        parser.parse_args(argv)  # exits on an unknown command or option
    assert unit(PACKAGING / "systemd/suture-agent.service")["Service"]["Type"] == "notify"


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    script = Path(sys.executable).with_name("suture")
    for path in UNITS:  # verify wants ExecStart to exist: point it at this checkout's script
        (tmp_path / path.name).write_text(path.read_text().replace("/usr/bin/suture", str(script)))
    out = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def test_the_example_configuration_is_valid_and_says_the_defaults() -> None:
    path = PACKAGING / "agent.toml.example"
    loaded = config.load(path, environ={})
    assert loaded.server == "https://patches.example.com/repo"
    defaults = config.AgentConfig().to_dict()
    for key, value in config.read_file(path).items():
        if key != "server":
            assert defaults[key] == value, key
    optional = {"sticky_level", "proxy", "registration_key", "host_id"}
    assert set(config.PARSERS) - optional <= set(config.read_file(path))


@pytest.mark.parametrize("name", ["suture-agent.service", "suture-boot.service"])
def test_the_agent_units_are_hardened(name: str) -> None:
    # The agent must load modules (CAP_SYS_MODULE) and name blocking tasks
    # (CAP_SYS_PTRACE); everything else is shut: at most 5.0 ("OK").
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(PACKAGING / "systemd" / name)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
    if found is None and "offline" in out.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    assert found is not None, out.stdout + out.stderr
    assert float(found.group(1)) <= 5.0, out.stdout
    service = unit(PACKAGING / "systemd" / name)["Service"]
    assert set(service["CapabilityBoundingSet"].split()) == {
        "CAP_SYS_MODULE", "CAP_SYS_PTRACE", "CAP_SYSLOG",
    }  # fmt: skip


def test_the_agent_runs_without_the_builders_or_the_servers_libraries(tmp_path: Path) -> None:
    # `pip install suture` brings tuf and securesystemslib only: the agent's
    # commands must not import pyelftools or psycopg (the extras).
    code = """
import importlib, pkgutil, sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("elftools", "psycopg"):
            raise ModuleNotFoundError(f"{name} is blocked: not installed with the agent")
sys.meta_path.insert(0, Blocked())
import suture.agent, suture.kernel, suture.bundle, suture.contract, suture.userspace
for pkg in (suture.agent, suture.kernel, suture.bundle, suture.contract, suture.userspace):
    for m in pkgutil.iter_modules(pkg.__path__):
        if pkg is not suture.userspace or m.name != "build":  # building is the builder's
            importlib.import_module(f"{pkg.__name__}.{m.name}")
import suture.repo.layout, suture.repo.index
from suture.cli.main import build_parser, main
build_parser()
for argv in (["update", "--help"], ["status", "--help"], ["boot", "--help"], ["docs", "man"]):
    assert main(argv) == 0, argv
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert done.returncode == 0 and done.stdout.endswith("ok\n"), done.stderr[-2000:]


def test_the_package_script_is_valid_shell() -> None:
    script = PACKAGING.parent / "scripts" / "package.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0


def test_extras_add_the_builder_and_the_server() -> None:
    import tomllib  # noqa: PLC0415

    project = tomllib.loads((PACKAGING.parent / "pyproject.toml").read_text())["project"]
    deps = " ".join(project["dependencies"])
    assert "tuf" in deps and "elftools" not in deps and "psycopg" not in deps
    extras = project["optional-dependencies"]
    assert any("pyelftools" in d for d in extras["builder"])
    assert any("psycopg" in d for d in extras["server"])
