"""``suture lab list``, ``lab cache`` and ``lab fetch --kernels``: text, JSON, exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from suture.cli.main import main
from suture.packages import cache, kernels
from tests.support import apt as fake_apt


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "cache"
    monkeypatch.setenv("SUTURE_CACHE", str(root))
    monkeypatch.delenv(cache.CACHE_MAX_ENV, raising=False)
    fake_apt.install(tmp_path, monkeypatch, fake_apt.ARCHIVE)
    yield root
    cache.unpin_all()


def test_list_json_marks_gone_sources(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (root / "kernels" / "6.1.0-57-amd64").mkdir(parents=True)
    (root / "kernels" / "6.1.0-57-amd64" / "kernel.json").write_text('{"version": "6.1.192-3"}')
    assert main(["lab", "list", "--kernels", "debian12", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == 1
    assert data["sets"] == ["debian12"]
    rows = {b["release"]: b for b in data["builds"]}
    assert list(rows) == [
        "6.1.0-9-amd64",
        "6.1.0-47-amd64",
        "6.1.0-51-amd64",
        "6.1.0-56-amd64",
        "6.1.0-57-amd64",
    ]
    assert rows["6.1.0-51-amd64"]["source_available"] is False
    assert rows["6.1.0-51-amd64"]["source"] == "linux-source-6.1=6.1.177-1"
    assert rows["6.1.0-57-amd64"]["cached"] == {"kernel": True, "source": False, "tree": False}


def test_list_text_defaults_to_every_set(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["RELEASE", "IMAGE", "SOURCE", "CACHED"]
    assert lines[1].split() == ["6.1.0-9-amd64", "6.1.27-1", "linux-source-6.1=6.1.27-1", "-"]
    assert any(
        line.split()[:4] == ["6.1.0-51-amd64", "6.1.177-1", "source", "gone"] for line in lines
    )
    releases = [line.split()[0] for line in lines[1:]]
    # Series in table order (Debian 12, Debian 13, the backports), flavours within a series.
    assert releases.index("6.1.0-57-cloud-amd64") < releases.index("6.12.115+deb13.1-amd64")
    assert lines[-1].split() == [
        "7.3.4+deb13-amd64", "7.3.4-1~bpo13+1", "linux-source-7.3=7.3.4-1~bpo13+1", "-"
    ]  # fmt: skip


def test_unknown_set_exits_64(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "list", "--kernels", "debian7", "--json"]) == 64
    assert json.loads(capsys.readouterr().out)["error"] == "usage"


def test_fetch_several_is_a_list(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fetched = []

    def fake_fetch(release: str | None = None) -> kernels.KernelTree:
        assert release is not None
        fetched.append(release)
        return kernels.KernelTree(release, "v", root / release)

    monkeypatch.setattr(kernels, "fetch", fake_fetch)
    argv = ["lab", "fetch", "--kernels", "debian12-cloud", "--kernel", "6.1.0-56-amd64", "--json"]
    assert main(argv) == 0
    assert fetched == ["6.1.0-47-cloud-amd64", "6.1.0-56-amd64", "6.1.0-57-cloud-amd64"]
    data = json.loads(capsys.readouterr().out)
    assert [k["release"] for k in data["kernels"]] == fetched
    assert data["format"] == 1


def test_fetch_one_keeps_its_shape(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(kernels, "fetch", lambda r=None: kernels.KernelTree(r or "d", "v", root))
    assert main(["lab", "fetch", "--kernel", "6.1.0-56-amd64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["release"] == "6.1.0-56-amd64"


def test_cache_lists_and_prunes(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for release, when in (("6.1.0-56-amd64", 100.0), ("6.1.0-57-amd64", 200.0)):
        (root / "kernels" / release).mkdir(parents=True)
        (root / "kernels" / release / "modules").write_bytes(b"m" * 100_000)
        cache.record_use(cache.BUILD, release, when)
    assert main(["lab", "cache", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == 1
    assert data["limit_bytes"] == 40 << 30
    assert [e["entry"] for e in data["entries"]] == ["build:6.1.0-57-amd64", "build:6.1.0-56-amd64"]
    first = data["entries"][0]
    assert first["last_used"] == "1970-01-01T00:03:20Z"
    assert first["own_bytes"] >= 100_000
    assert first["in_use"] is False
    total = data["total_bytes"]

    assert main(["lab", "cache", "--prune", "--max", str(total - 50_000)]) == 0
    out = capsys.readouterr().out
    assert "evicted build:6.1.0-56-amd64" in out
    assert "build:6.1.0-57-amd64" in out.splitlines()[1]
    assert not (root / "kernels" / "6.1.0-56-amd64").exists()


def test_cache_bad_size_exits_64(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "cache", "--prune", "--max", "much"]) == 64
    assert "'much' is not a size" in capsys.readouterr().err
