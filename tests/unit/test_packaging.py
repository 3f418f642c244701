"""The systemd units (agent and server) and the example configuration that ship."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from suture.agent import config
from suture.cli import main

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
UNITS = sorted((PACKAGING / "systemd").glob("*.service"))


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


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
    parser = main._parser()
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
        ["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.iterdir())],
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
