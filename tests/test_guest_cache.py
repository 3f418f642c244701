"""Two real builds of one source version share its unpacked tree: hard links, < 1 GB more disk.

The amd64 and cloud-amd64 flavours of the newest Debian 12 build are
prepared from the package archive (no QEMU: kernels and trees only), then a
real fix is compiled in the second tree and put back, and the shared source
must be exactly as it was.
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from suture.builder import source
from suture.builder.compile import compile_pair
from suture.fsutil import cache_dir
from suture.packages import apt, cache, sets, sources

pytestmark = pytest.mark.guest

GiB = 1 << 30
FIXED = "fs/proc/cmdline.c"
SAMPLES = ("Makefile", FIXED, "kernel/fork.c", "include/linux/sched.h", "scripts/config")


def du(path: Path) -> int:
    """Bytes on disk under ``path``, each inode counted once (``du -s``)."""
    out = subprocess.run(["du", "-s", "-B1", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def newest_flavours() -> tuple[str, str]:
    """The current default build and its cloud flavour (resolved from apt now)."""
    release = apt.default_release()
    cloud = release.removesuffix("-amd64") + "-cloud-amd64"
    assert cloud in sets.set_releases("debian12-cloud"), f"the archive has no {cloud}"
    return release, cloud


def unlinked(tree: Path, shared: Path) -> list[str]:
    """Files of the shared source whose name in ``tree`` is not a hard link to them."""
    out = []
    for dirpath, _dirs, names in os.walk(shared):
        for name in names:
            src = Path(dirpath, name)
            rel = src.relative_to(shared)
            if src.is_symlink():
                continue
            if not (tree / rel).samefile(src):
                out.append(str(rel))
    return out


def test_two_flavours_of_one_version_share_its_source(tmp_path: Path) -> None:
    amd64, cloud = newest_flavours()
    first = source.prepare(amd64)
    spec = json.loads((first.path.parent / "tree.json").read_text())["source"]
    package, _, version = spec.partition("=")
    shared = sources.cached(package, version)
    assert shared is not None
    fresh = not (source.source_dir(cloud) / "tree.json").exists()
    before = du(cache_dir())
    second = source.prepare(cloud)
    added = du(cache_dir()) - before
    assert json.loads((second.path.parent / "tree.json").read_text())["source"] == spec
    for tree in (first, second):
        assert unlinked(tree.path, shared) == [], tree.release
        for rel in SAMPLES:
            assert (tree.path / rel).samefile(shared / rel)

    usage = cache.measure(cache.entries())
    own = usage.own[f"build:{cloud}"]
    print(f"\n{cloud} after {amd64}: own {own} bytes; du grew by {added} bytes (fresh={fresh})")
    assert own < GiB
    if fresh:
        assert added < GiB

    # A real fix, compiled and put back in the second tree.
    target = shared / FIXED
    text = target.read_text()
    line = "\tseq_puts(m, saved_command_line);\n"
    diff = difflib.unified_diff(
        text.splitlines(True),
        text.replace(line, '\tseq_puts(m, "x");\n' + line, 1).splitlines(True),
        f"a/{FIXED}",
        f"b/{FIXED}",
    )
    fix = tmp_path / "fix.patch"
    fix.write_text("".join(diff))
    was = target.stat()
    since = time.time() - 2
    (pair,) = compile_pair(second, fix, tmp_path / "work")
    assert pair.original.read_bytes() != pair.patched.read_bytes()
    now = target.stat()
    assert target.read_text() == text
    assert (now.st_ino, now.st_mtime_ns, now.st_size) == (was.st_ino, was.st_mtime_ns, was.st_size)
    assert (second.path / FIXED).samefile(target)
    assert sources.touched(second.path, since) == []
    assert sources.touched(first.path, since) == []
