"""``suture repo ...`` and ``suture publish``: text, JSON and exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from suture.cli.main import main
from tests.support.repo import BUILD_A, RELEASE, make_bundle


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str], status: int = 0) -> Any:
    assert main([*argv, "--json"]) == status
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def repo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["repo", "init", str(tmp_path / "repo")]) == 0
    capsys.readouterr()
    return tmp_path / "repo"


def test_init_says_where_the_keys_go(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["repo", "init", str(tmp_path / "repo")]) == 0
    text = capsys.readouterr().out
    assert "kept apart for offline use" in text
    assert "move them to offline storage" in text
    assert f"install {tmp_path / 'repo/metadata/root.json'} on every agent" in text
    assert "never the key folders" in text


def test_init_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(["repo", "init", str(tmp_path / "repo"), "--root-threshold", "2"], capsys)
    assert data["format"] == 1
    assert data["ok"] is True
    assert data["root_threshold"] == 2
    assert len(data["root_keys"]) == 2
    assert all("/keys-offline/" in p for p in data["root_keys"])
    assert data["trusted_root"].endswith("metadata/root.json")


def test_init_twice_fails_with_the_repository_exit_code(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = run_json(["repo", "init", str(repo)], capsys, status=60)
    assert data["error"] == "repo-exists"
    assert data["ok"] is False


def test_publish_yank_refresh_rotate(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = make_bundle(tmp_path, 1)
    publish = ["publish", str(bundle), "--repo", str(repo), "--channel", "testing"]
    data = run_json(publish, capsys)
    assert (data["level"], data["channel"], data["build_id"]) == (1, "testing", BUILD_A)
    assert data["path"].startswith(f"{RELEASE}/{BUILD_A}/testing/")

    data = run_json(
        ["publish", str(bundle), "--repo", str(repo), "--channel", "testing"], capsys, 61
    )
    assert (data["error"], data["level"], data["published"]) == ("level", "1", "1")

    argv = ["repo", "yank", "--repo", str(repo), "--kernel", RELEASE, "--build-id", BUILD_A]
    data = run_json([*argv, "--level", "1", "--channel", "testing"], capsys)
    assert (data["level"], data["latest"]) == (1, None)
    data = run_json([*argv, "--level", "1"], capsys, status=60)
    assert data["error"] == "not-published"

    data = run_json(["repo", "refresh", "--repo", str(repo)], capsys)
    assert data["versions"]["timestamp"] == 4

    data = run_json(["repo", "rotate-key", "--repo", str(repo), "timestamp"], capsys)
    assert (data["role"], data["root_version"]) == ("timestamp", 2)


def test_publish_text(repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish", str(make_bundle(tmp_path, 4)), "--repo", str(repo)]) == 0
    assert capsys.readouterr().out.startswith(f"published level 4 as {RELEASE}/{BUILD_A}/stable/")


def test_rotate_key_without_the_root_key_says_where_to_look(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["repo", "rotate-key", "--repo", str(repo), "targets"]
    assert main([*argv, "--offline-keys", str(tmp_path / "usb")]) == 60
    err = capsys.readouterr().err
    assert "a new root needs 1 root key(s); 0 found" in err
    assert "suture: what to do: bring the offline root keys back" in err


def test_commands_on_a_folder_that_is_no_repository(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = run_json(["repo", "refresh", "--repo", str(tmp_path)], capsys, status=60)
    assert data["error"] == "not-a-repo"
