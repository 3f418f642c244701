"""suture.cli.main: usage errors, exit codes and JSON output, without touching the kernel."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from suture.cli import main as main_module
from suture.cli.main import main
from suture.kernel import engine
from suture.lab import guest
from suture.packages import kernels


@pytest.fixture
def no_side_effects(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the CLI gets as far as the kernel or the lab."""

    def forbidden(*args: object, **kwargs: object) -> None:
        pytest.fail("the command went past its argument checks")

    for target, name in (
        (engine, "unload"),
        (engine, "unload_all"),
        (engine, "apply"),
        (kernels, "fetch"),
        (guest, "run"),
    ):
        monkeypatch.setattr(target, name, forbidden)


@pytest.mark.usefixtures("no_side_effects")
@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["unload"], "name one live patch or give --all"),
        (["unload", "x", "--all"], "name one live patch or give --all"),
        (["unload", "x", "--timeout", "0"], "--timeout must be positive"),
        (["apply", "x.ko", "--timeout", "-1"], "--timeout must be positive"),
        (["lab", "run", "--env", "bad", "--", "true"], "--env 'bad' is not K=V"),
        (["lab", "run", "--env", "=v", "--", "true"], "--env '=v' is not K=V"),
        (["lab", "run", "--env", "bad"], "no command given"),
        (["lab", "run", "--"], "no command given"),
        (["lab", "run"], "no command given"),
    ],
)
def test_usage_errors(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 64
    out, err = capsys.readouterr()
    assert out == ""
    assert f"suture: error: {says}" in err
    assert "suture: what to do:" in err


@pytest.mark.usefixtures("no_side_effects")
def test_usage_error_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["unload", "--json"]) == 64
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    assert data["error"] == "usage"


@pytest.mark.parametrize("json_first", [False, True])
def test_apply_missing_module_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], json_first: bool
) -> None:
    missing = str(tmp_path / "nonexistent.ko")
    argv = ["--json", "apply", missing] if json_first else ["apply", missing, "--json"]
    assert main(argv) == 30
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["format"] == 1
    assert data["ok"] is False
    assert data["error"] == "module-format"
    assert "no such file" in data["message"]
    assert data["hint"]
    assert "suture: error:" in err


def test_apply_missing_module_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["apply", str(tmp_path / "nonexistent.ko")]) == 30
    out, err = capsys.readouterr()
    assert out == ""
    assert "no such file" in err


def test_lab_run_passes_env_and_returncode(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    seen: dict[str, object] = {}
    tree = kernels.KernelTree("6.1.0-56-amd64", "6.1.192-2", tmp_path)

    def fake_run(tree_: object, cmd: list[str], cfg: guest.GuestConfig, **kw: object) -> object:
        seen.update(cmd=cmd, env=cfg.env, timeout=cfg.timeout, threads=cfg.tcg_threads)
        return guest.GuestResult(returncode=3, seconds=1.25, console="")

    monkeypatch.setattr(kernels, "fetch", lambda release: tree)
    monkeypatch.setattr(guest, "run", fake_run)
    argv = ["lab", "run", "--json", "--env", "A=b=c", "--timeout", "9", "--", "sh", "-c", "exit 3"]
    assert main(argv) == 3
    want = {"cmd": ["sh", "-c", "exit 3"], "env": {"A": "b=c"}, "timeout": 9.0, "threads": ""}
    assert seen == want  # "": the lab chooses by the kernel
    data = json.loads(capsys.readouterr().out)
    assert data == {
        "format": 1,
        "ok": False,
        "release": "6.1.0-56-amd64",
        "root": "host",
        "returncode": 3,
        "seconds": 1.25,
    }
    assert main(["lab", "run", "--tcg-threads", "single", "--", "true"]) == 3
    assert seen["threads"] == "single"


def test_status_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = {
        "format": 1,
        "kernel": {
            "release": "6.1.0-56-amd64",
            "arch": "x86_64",
            "build_id": "",
            "livepatch": True,
            "lockdown": "none",
            "taint_flags": "OEK",
        },
        "patches": [
            {
                "name": "suture_fix",
                "enabled": True,
                "transition": False,
                "replace": True,
                "objects": [
                    {"name": "vmlinux", "patched": True, "functions": [{"name": "f", "sympos": 0}]},
                    {"name": "ext4", "patched": False, "functions": [{"name": "g", "sympos": 1}]},
                ],
            }
        ],
    }
    monkeypatch.setattr(engine, "status", lambda: dict(data))
    assert main(["status", "--state-dir", str(tmp_path)]) == 3  # no build id: unsupported
    out = capsys.readouterr().out
    assert "kernel:    6.1.0-56-amd64 (x86_64)" in out
    assert "build id:  unknown" in out
    assert "taint: OEK" in out
    assert "patch:     suture_fix (enabled)" in out
    assert "  vmlinux: f" in out
    assert "  ext4 (not loaded): g" in out
    assert main(["status", "--json", "--state-dir", str(tmp_path)]) == 3
    shown = json.loads(capsys.readouterr().out)
    assert shown["agent"]["level"] == 0
    assert shown["agent"]["last_check"]["at"] is None
    del shown["agent"]
    assert shown == data


def test_only_the_command_asked_for_is_built(capsys: pytest.CaptureFixture[str]) -> None:
    # Every agent run pays for the parser: one command's sub-parser, not all of them.
    parser = main_module.build_parser(["--json", "uname", "-r"])
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert list(action.choices) == ["uname"]
    assert main(["bogus"]) == 64  # the full parser answers an unknown command
    assert "invalid choice: 'bogus'" in capsys.readouterr().err
