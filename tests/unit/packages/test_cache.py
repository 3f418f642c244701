"""suture.packages.cache: entries, sizes with hard links counted once, LRU eviction, pins."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from suture.errors import UsageError
from suture.packages import cache, kernels

MiB = 1 << 20
SRC = "linux-source-6.1=6.1.192-3"
R57, R57C, R56 = "6.1.0-57-amd64", "6.1.0-57-cloud-amd64", "6.1.0-56-amd64"


def put(path: Path, size: int = 0, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if text:
        path.write_text(text)
    else:
        path.write_bytes(os.urandom(size))
    return path


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A cache of a shared source, two builds with trees made from it, and one without."""
    root = tmp_path / "cache"
    monkeypatch.setenv("SUTURE_CACHE", str(root))
    monkeypatch.delenv(cache.CACHE_MAX_ENV, raising=False)
    shared = put(root / "sources" / SRC / "linux" / "fs" / "a.c", 2 * MiB)
    put(root / "sources" / SRC / "source.json", text="{}")
    for release, own in ((R57, 1), (R57C, 1)):
        put(root / "kernels" / release / "kernel.json", text=json.dumps({"version": "6.1.192-3"}))
        put(root / "kernels" / release / "root" / "modules", own * MiB)
        tree = root / "trees" / release
        put(tree / "tree.json", text=json.dumps({"source": SRC}))
        (tree / "linux" / "fs").mkdir(parents=True)
        (tree / "linux" / "fs" / "a.c").hardlink_to(shared)
        put(tree / "linux" / "include" / "generated.h", MiB)
    put(root / "kallsyms" / R57, MiB // 4)
    put(root / "initramfs" / f"initramfs-{R57}-0123456789abcdef.cpio", MiB // 2)
    put(root / "kernels" / R56 / "root" / "modules", 3 * MiB)
    put(root / "kernels" / ".6.1.0-55-amd64.x1y2" / "half", MiB)  # a fetch under way: no entry
    for kind, name, when in (
        (cache.SOURCE, SRC, 50.0),  # oldest, but builds' trees were made from it
        (cache.BUILD, R56, 100.0),
        (cache.BUILD, R57C, 200.0),
        (cache.BUILD, R57, 300.0),
    ):
        cache.record_use(kind, name, when)
    yield root
    cache.unpin_all()


def keys(found: list[cache.Entry]) -> list[str]:
    return [e.key for e in found]


def du(path: Path) -> int:
    """Disk use as du counts it: each inode once, in bytes."""
    out = subprocess.run(["du", "-s", "-B1", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def test_entries_group_every_part_of_a_build(root: Path) -> None:
    found = {e.key: e for e in cache.entries()}
    assert sorted(found) == [f"build:{R56}", f"build:{R57}", f"build:{R57C}", f"source:{SRC}"]
    b57 = found[f"build:{R57}"]
    assert {p.relative_to(root).parts[0] for p in b57.paths} == {
        "kernels",
        "trees",
        "kallsyms",
        "initramfs",
    }
    assert (b57.source, b57.last_used) == (SRC, 300.0)
    assert found[f"build:{R56}"].source == ""


def test_last_use_without_a_record_is_the_newest_part(root: Path) -> None:
    (root / "usage" / "build" / f"{R56}.json").unlink()
    os.utime(root / "kernels" / R56, (1234.0, 1234.0))
    found = {e.key: e for e in cache.entries()}
    assert found[f"build:{R56}"].last_used == 1234.0


def test_sizes_count_hard_links_once_like_du(root: Path) -> None:
    usage = cache.measure(cache.entries())
    assert usage.total == du(root)
    # The source file is linked from two trees: shared by three entries, counted once.
    assert usage.shared[f"build:{R57}"] >= 2 * MiB
    assert usage.shared[f"source:{SRC}"] >= 2 * MiB
    assert usage.own[f"source:{SRC}"] < MiB // 8  # folders and source.json only
    assert 2 * MiB < usage.own[f"build:{R57}"] < 3 * MiB  # modules, generated.h, kallsyms, cpio
    assert usage.other >= MiB  # the fetch under way
    assert usage.freed({f"build:{R57}", f"build:{R57C}"}) < usage.total - 2 * MiB
    everything = set(usage.own)
    assert usage.freed(everything) == usage.total - usage.other


def test_prune_evicts_least_recently_used_first_until_it_fits(root: Path) -> None:
    before = cache.measure(cache.entries()).total
    result = cache.prune(before - 2 * MiB)  # one 3 MiB build is enough
    assert result.evicted == (f"build:{R56}",)
    assert result.before == before
    assert result.after == du(root)
    assert not (root / "kernels" / R56).exists()
    assert not (root / "usage" / "build" / f"{R56}.json").exists()
    assert list((root / ".trash").iterdir()) == []
    assert keys(cache.entries()) == [f"build:{R57}", f"build:{R57C}", f"source:{SRC}"]


def test_a_source_goes_only_after_the_builds_made_from_it(root: Path) -> None:
    result = cache.prune(0)
    assert result.evicted == (
        f"build:{R56}",
        f"build:{R57C}",
        f"build:{R57}",
        f"source:{SRC}",
    )
    assert cache.entries() == []
    assert result.after == du(root)  # what is left is no entry's
    for folder in ("kernels", "trees", "kallsyms", "initramfs", "sources"):
        assert [p.name for p in (root / folder).iterdir() if not p.name.startswith(".")] == []


def test_entries_in_use_are_never_evicted(root: Path) -> None:
    cache.pin(cache.BUILD, R57)
    assert cache.in_use(cache.BUILD, R57)
    result = cache.prune(0)
    assert result.evicted == (f"build:{R56}", f"build:{R57C}")
    assert result.in_use == (f"build:{R57}",)  # and its source is still needed by it
    assert keys(cache.entries()) == [f"build:{R57}", f"source:{SRC}"]
    assert (root / "trees" / R57 / "linux" / "fs" / "a.c").read_bytes() == (
        root / "sources" / SRC / "linux" / "fs" / "a.c"
    ).read_bytes()


def test_an_entry_another_process_uses_is_kept(root: Path) -> None:
    code = (
        "import sys; from suture.packages import cache; "
        f"cache.pin('build', {R56!r}); print('pinned', flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "pinned\n"
        result = cache.prune(0)
        assert f"build:{R56}" in result.in_use
        assert (root / "kernels" / R56 / "root" / "modules").exists()
    finally:
        child.communicate("")
    assert cache.prune(0).evicted == (f"build:{R56}",)  # once that process is gone


def test_an_interrupted_eviction_leaves_no_half_entry(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(cache.shutil, "rmtree", killed)
        with pytest.raises(KeyboardInterrupt):
            cache.prune(0)
    # The build that was going is gone from every place an entry is looked up.
    assert f"build:{R56}" not in keys(cache.entries())
    assert not (root / "kernels" / R56).exists()
    assert list((root / ".trash").iterdir())
    cache.prune(10**12)  # fits already: only the trash is emptied
    assert list((root / ".trash").iterdir()) == []


def test_pinned_releases_after_the_block_only_if_it_pinned(root: Path) -> None:
    with cache.pinned(cache.SOURCE, SRC):
        assert cache.in_use(cache.SOURCE, SRC)
    assert not cache.in_use(cache.SOURCE, SRC)
    cache.pin(cache.SOURCE, SRC)
    with cache.pinned(cache.SOURCE, SRC):
        pass
    assert cache.in_use(cache.SOURCE, SRC)


def test_fetch_of_a_cached_build_pins_it_and_records_its_use(root: Path) -> None:
    tree = kernels.fetch(R57)
    assert tree.release == R57
    assert cache.in_use(cache.BUILD, R57)
    assert {e.key: e for e in cache.entries()}[f"build:{R57}"].last_used > 300.0


def test_enforce_says_what_went_and_what_stays_over(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="suture")
    monkeypatch.setenv(cache.CACHE_MAX_ENV, "1M")
    cache.pin(cache.BUILD, R57)
    result = cache.enforce()
    assert result is not None
    err = caplog.text
    assert f"evicted build:{R56} (least recently used)" in err
    assert f"is above SUTURE_CACHE_MAX=1.0M; in use: build:{R57}" in err


@pytest.mark.parametrize(
    ("text", "size"),
    [("40G", 40 << 30), ("500m", 500 << 20), ("1.5T", int(1.5 * (1 << 40))), ("123", 123)],
)
def test_parse_size(text: str, size: int) -> None:
    assert cache.parse_size(text) == size
    assert cache.parse_size(f"{text}iB" if text[-1].isalpha() else text) == size


def test_limit_default_and_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cache.CACHE_MAX_ENV, raising=False)
    assert cache.limit() == 40 << 30
    monkeypatch.setenv(cache.CACHE_MAX_ENV, "lots")
    with pytest.raises(UsageError, match="SUTURE_CACHE_MAX='lots' is not a size"):
        cache.limit()


def test_a_pin_belongs_to_its_cache_folder(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache.pin(cache.BUILD, R57)
    monkeypatch.setenv("SUTURE_CACHE", str(tmp_path / "other"))
    assert not cache.in_use(cache.BUILD, R57)
    cache.pin(cache.BUILD, R57)  # the same build in another cache: pinned there too
    assert cache.in_use(cache.BUILD, R57)
    cache.unpin_all()
    assert not cache.in_use(cache.BUILD, R57)
