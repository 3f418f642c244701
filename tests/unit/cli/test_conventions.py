"""The CLI's conventions, for every command: help that teaches, JSON that parses, 64 for usage.

The command tree is walked from the parser itself, so a new command is held
to the same rules without being named here:

- ``--help`` has a description, every option has help text, and the epilog
  gives examples and the exit status;
- under ``--json``, what the command prints parses (results and errors);
- a usage error exits 64, before or after the command's name;
- a closed stdout gives no traceback (and exit 141 where suture writes it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from suture import __version__
from suture.cli import docs
from suture.cli.main import build_parser, main
from suture.repo import create
from suture.server import Server, open_server
from tests.support.agent import publish_level
from tests.support.server import ADMIN

ROOT = Path(__file__).resolve().parents[3]
SUTURE = [sys.executable, "-m", "suture.cli.main"]
COMMANDS = list(docs.commands(build_parser()))
LEAVES = [c for c in COMMANDS if not any(o.words[: len(c.words)] == c.words and o is not c
                                         for o in COMMANDS)]  # fmt: skip


def ids(commands: list[docs.Command]) -> list[str]:
    return [" ".join(c.words) for c in commands]


@pytest.mark.parametrize("cmd", COMMANDS, ids=ids(COMMANDS))
def test_help_has_a_description_option_help_examples_and_exit_codes(cmd: docs.Command) -> None:
    parser = cmd.parser
    assert cmd.summary, f"{cmd.name} has no one-line summary"
    assert parser.description and len(parser.description) > 40, f"{cmd.name}: no description"
    for action in docs.options(parser):
        assert action.help and action.help != argparse.SUPPRESS, (
            f"{cmd.name}: {'/'.join(action.option_strings) or action.dest} has no help"
        )
    text = parser.format_help()
    assert "exit status:" in text
    assert " 64  " in text  # usage errors, everywhere
    if cmd in LEAVES:
        assert "examples:" in text, f"{cmd.name}: no examples"
        assert "  suture " in text.split("examples:")[1] or "systemctl" in text


@pytest.mark.parametrize("cmd", LEAVES, ids=ids(LEAVES))
def test_a_usage_error_exits_64_with_a_json_error(
    cmd: docs.Command, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*cmd.words, "--json", "--no-such-option"]) == 64
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert (data["ok"], data["error"], data["format"]) == (False, "usage", 1)
    assert data["message"] and data["hint"].startswith("see 'suture")
    assert "usage: suture" in err
    assert main(["--json", "--no-such-option", *cmd.words]) == 64  # before the name too
    json.loads(capsys.readouterr().out)


def test_usage_errors_exit_64_for_groups_and_unknown_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in ([], ["bogus"], ["fleet"], ["fleet", "rollout"], ["lab", "run"], ["unload"]):
        assert main(argv) == 64, argv
    capsys.readouterr()


def test_version_and_docs_print_json_under_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "--version"]) == 0
    assert json.loads(capsys.readouterr().out) == {"format": 1, "ok": True, "version": __version__}
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"suture {__version__}\n"
    assert main(["--json", "docs", "man"]) == 0
    assert json.loads(capsys.readouterr().out)["man"].startswith(".TH SUTURE 1")


def test_the_man_page_and_completion_cover_every_command_and_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["docs", "man"]) == 0
    man = capsys.readouterr().out
    assert main(["docs", "completion"]) == 0
    completion = capsys.readouterr().out
    for cmd in COMMANDS:
        assert f".SS suture {' '.join(cmd.words)}".replace("-", "\\-") in man, cmd.name
        assert f'"{"/".join(cmd.words)}")' in completion, cmd.name
        for action in docs.options(cmd.parser):
            for option in action.option_strings:
                assert option.replace("-", "\\-") in man, (cmd.name, option)
    for code in (0, 1, 2, 3, 4, 10, 31, 64, 71, 72, 130, 141):
        assert f"\\fB{code}\\fR" in man
    if subprocess.run(["bash", "-n"], input=completion, text=True, check=False).returncode:
        pytest.fail("the completion script is not valid bash")


def test_completion_completes_commands_and_options() -> None:
    script = subprocess.run(
        [*SUTURE, "docs", "completion"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    probe = (
        script
        + 'COMP_WORDS=(suture fleet rollout ""); COMP_CWORD=3; _suture; echo "${COMPREPLY[*]}"\n'
        + 'COMP_WORDS=(suture update --n); COMP_CWORD=2; _suture; echo "${COMPREPLY[*]}"\n'
    )
    lines = subprocess.run(
        ["bash", "-c", probe], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert lines[0].split()[:6] == ["show", "set", "halt", "resume", "promote", "unroll"]
    assert lines[1] == "--now"


# --- JSON that parses, on commands that can run here -------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Server]:
    create.init(tmp_path / "repo")
    publish_level(tmp_path / "repo", 1)
    srv = open_server(
        tmp_path / "repo", listen="127.0.0.1:0", db=f"sqlite:///{tmp_path}/s.db",
        log=[].append, admin_token=ADMIN,
    )  # fmt: skip
    srv.start(poll_interval=0.01)
    yield srv
    srv.stop()


def test_json_output_parses_for_commands_that_run_here(
    tmp_path: Path,
    served: Server,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = tmp_path / "admin.token"
    token.write_text(ADMIN + "\n")
    fleet = ["--server", served.url, "--admin-token-file", str(token)]
    state = ["--state-dir", str(tmp_path / "agent")]
    runs = [
        ["status", *state],
        ["uname", "-a", *state],
        ["repo", "init", str(tmp_path / "r2")],
        ["repo", "refresh", "--repo", str(tmp_path / "r2")],
        ["fleet", "hosts", *fleet],
        ["fleet", "summary", *fleet],
        ["fleet", "key", "create", "--tag", "env:x", *fleet],
        ["fleet", "key", "list", *fleet],
        ["fleet", "rollout", "show", *fleet],
        ["fleet", "rollout", "halt", "--level", "1", *fleet],
        ["fleet", "rollout", "resume", *fleet],
        ["fleet", "export", *fleet],  # JSON under --json
        ["fleet", "exposed", "CVE-2026-1001", *fleet],
        ["lab", "cache"],
        ["docs", "completion"],
    ]
    monkeypatch.setenv("SUTURE_CACHE", str(tmp_path / "cache"))
    for argv in runs:
        code = main(["--json", *argv])
        out = capsys.readouterr().out
        assert json.loads(out) is not None, (argv, code, out)
        assert code in (0, 1, 2, 3, 4), (argv, code, out)


def test_fleet_refuses_json_csv_and_levels_never_published(
    tmp_path: Path, served: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "admin.token"
    token.write_text(ADMIN + "\n")
    fleet = ["--server", served.url, "--admin-token-file", str(token)]
    assert main(["--json", "fleet", "export", "--format", "csv", *fleet]) == 64
    assert json.loads(capsys.readouterr().out)["error"] == "usage"
    assert main(["fleet", "rollout", "halt", "--level", "99", *fleet]) == 64
    assert "level 99 was never published on stable" in capsys.readouterr().err
    assert (
        main(["fleet", "rollout", "promote", "--level", "1", "--channel", "testing", *fleet]) == 64
    )
    capsys.readouterr()


def test_agent_options_that_would_mean_something_else_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # In a folder of the test's own: a relative path that slipped through would
    # be written there, never into the checkout.
    monkeypatch.chdir(tmp_path)
    assert main(["update", "--config", str(tmp_path / "missing.toml")]) == 64
    assert "missing.toml does not exist" in capsys.readouterr().err
    assert main(["update", "--state-dir", "relative/state"]) == 64
    assert "state_dir" in capsys.readouterr().err
    assert main(["status", "--state-dir", "relative"]) == 64
    assert not (tmp_path / "relative").exists()  # refused before anything was written
    assert main(["lab", "fetch", "--kernel", ""]) == 64
    assert "--kernel needs a release" in capsys.readouterr().err
    assert main(["lab", "run", "--kernel", "", "--", "true"]) == 64
    capsys.readouterr()


# --- a closed stdout ------------------------------------------------------------------------


def closed_stdout(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run suture with its stdout a pipe whose reader is already gone."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [*SUTURE, *argv], stdout=write, stderr=subprocess.PIPE, text=True, check=False,
            cwd=ROOT, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write)


@pytest.mark.parametrize("cmd", COMMANDS, ids=ids(COMMANDS))
def test_a_closed_stdout_gives_no_traceback(cmd: docs.Command) -> None:
    done = closed_stdout([*cmd.words, "--help"])
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode in (0, 141), done.stderr  # argparse drops help it cannot write


def test_fleet_hosts_into_a_closed_pipe(tmp_path: Path, served: Server) -> None:
    token = tmp_path / "admin.token"
    token.write_text(ADMIN + "\n")
    for argv in (["--json", "fleet", "hosts"], ["fleet", "export", "--format", "csv"]):
        done = closed_stdout([*argv, "--server", served.url, "--admin-token-file", str(token)])
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode == 141, done.stderr
    done = closed_stdout(["docs", "man"])
    assert (done.returncode, "Traceback" in done.stderr) == (141, False)
