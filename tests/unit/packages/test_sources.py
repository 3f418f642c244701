"""suture.packages.sources: one unpacked source per version, shared by hard links, never written."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from suture.builder import source as builder_source
from suture.errors import SourceGoneError
from suture.packages import cache, kernels, sources
from tests.support import apt as fake_apt

PKG = "linux-source-6.1"
FILES = {
    "Makefile": "all:\n",
    "fs/proc/cmdline.c": "int cmdline;\n",
    "kernel/fork.c": "int fork_192_3;\n",
    "scripts/config": "#!/bin/sh\n",
}


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "cache"
    monkeypatch.setenv("SUTURE_CACHE", str(root))
    yield root
    cache.unpin_all()


def tree_of(base: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(text)
    return base


def test_link_identical_links_only_same_path_mode_and_bytes(tmp_path: Path) -> None:
    ref = tree_of(
        tmp_path / "ref", {"a.c": "same\n", "b.c": "one\n", "c.sh": "x\n", "d/e.h": "e\n"}
    )
    new = tree_of(tmp_path / "new", {"a.c": "same\n", "b.c": "two\n", "c.sh": "x\n", "f.c": "f\n"})
    (new / "d").mkdir()
    (new / "d" / "e.h").symlink_to("../a.c")
    (new / "c.sh").chmod(0o755)
    assert sources.link_identical(new, ref) == (1, (new / "a.c").stat().st_blocks * 512)
    assert (new / "a.c").samefile(ref / "a.c")
    for rel in ("b.c", "c.sh", "f.c"):
        assert (new / rel).stat().st_nlink == 1, rel
    assert (new / "d" / "e.h").is_symlink()
    assert sorted(p.name for p in new.iterdir()) == ["a.c", "b.c", "c.sh", "d", "f.c"]


def test_farm_links_files_and_touched_finds_writes_through_a_link(tmp_path: Path) -> None:
    shared = tree_of(tmp_path / "shared", FILES)
    old = time.time() - 3600
    for p in shared.rglob("*"):
        os.utime(p, (old, old))
    farm = tmp_path / "farm"
    since = time.time() - 1
    sources.farm(shared, farm)
    assert (farm / "fs" / "proc" / "cmdline.c").samefile(shared / "fs" / "proc" / "cmdline.c")
    (farm / "new.h").write_text("generated\n")  # a file of the build's own
    replaced = farm / "Makefile.tmp"
    replaced.write_text("replaced\n")
    replaced.replace(farm / "Makefile")  # the right way: the shared inode is left alone
    assert sources.touched(farm, since) == []
    with (farm / "kernel" / "fork.c").open("a") as f:  # the wrong way
        f.write("oops\n")
    assert sources.touched(farm, since) == ["kernel/fork.c"]
    assert (shared / "kernel" / "fork.c").read_text().endswith("oops\n")  # what it guards


def test_ensure_unpacks_once_and_links_other_revisions(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    newer = fake_apt.source_deb(tmp_path, "6.1.192-3", FILES)
    older = fake_apt.source_deb(tmp_path, "6.1.192-2", {**FILES, "kernel/fork.c": "int f2;\n"})
    fake_apt.install(
        tmp_path,
        monkeypatch,
        {PKG: ["6.1.192-3", "6.1.192-2"]},
        {f"{PKG}=6.1.192-3": newer, f"{PKG}=6.1.192-2": older},
    )
    a = sources.ensure(PKG, "6.1.192-3", "6.1.0-57-amd64")
    assert a == root / "sources" / f"{PKG}=6.1.192-3" / "linux"
    assert (a / "fs" / "proc" / "cmdline.c").read_text() == "int cmdline;\n"
    b = sources.ensure(PKG, "6.1.192-2", "6.1.0-56-amd64")
    assert (b / "Makefile").samefile(a / "Makefile")
    assert (b / "scripts" / "config").samefile(a / "scripts" / "config")
    assert not (b / "kernel" / "fork.c").samefile(a / "kernel" / "fork.c")
    meta = json.loads((b.parent / "source.json").read_text())
    assert meta["linked"]["from"] == f"{PKG}=6.1.192-3"
    assert meta["linked"]["files"] == 3
    assert sources.ensure(PKG, "6.1.192-3", "6.1.0-57-amd64") == a  # cached: no download
    assert [p.name for p in (root / "sources").iterdir() if p.name.startswith(".u")] == []
    assert not cache.in_use(cache.SOURCE, f"{PKG}=6.1.192-3")  # only while it was unpacked


def test_a_half_unpacked_source_is_never_taken_for_whole(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    half = root / "sources" / f"{PKG}=6.1.192-3" / "linux"
    tree_of(half, {"Makefile": "half\n"})  # no source.json: killed before the end
    stale = tree_of(root / "sources" / ".unpack.abc", {"x": "y"})  # a killed download
    assert sources.cached(PKG, "6.1.192-3") is None
    deb = fake_apt.source_deb(tmp_path, "6.1.192-3", FILES)
    fake_apt.install(tmp_path, monkeypatch, {PKG: ["6.1.192-3"]}, {f"{PKG}=6.1.192-3": deb})
    tree = sources.ensure(PKG, "6.1.192-3", "6.1.0-57-amd64")
    assert (tree / "Makefile").read_text() == "all:\n"
    assert not stale.exists()


def test_a_version_gone_from_the_archive_is_refused(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_apt.install(tmp_path, monkeypatch, {PKG: ["6.1.192-3", "6.1.176-1"]}, {})
    with pytest.raises(SourceGoneError, match=r"linux-source-6.1=6.1.177-1") as e:
        sources.ensure(PKG, "6.1.177-1", "6.1.0-51-amd64")
    assert (e.value.release, e.value.version, e.value.exit_code) == (
        "6.1.0-51-amd64",
        "6.1.177-1",
        20,
    )
    assert e.value.to_dict()["package"] == PKG


def test_prepare_refuses_a_gone_source_before_downloading(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_apt.install(tmp_path, monkeypatch, fake_apt.ARCHIVE)

    def no_download(release: str | None = None) -> kernels.KernelTree:
        pytest.fail("the kernel was downloaded for a build that cannot be built")

    monkeypatch.setattr(kernels, "fetch", no_download)
    with pytest.raises(SourceGoneError) as e:
        builder_source.prepare("6.1.0-51-amd64")
    assert "6.1.0-51-amd64, linux-source-6.1=6.1.177-1, is no longer" in e.value.message
