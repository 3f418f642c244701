"""The builder on real Debian source trees, on the host (no guest): porting, kpatch's headers.

The builds are resolved at run time from apt: the newest Debian 12 build
whose ``linux-source`` is in the archive, and an older one of an earlier
upstream release (one already prepared in the cache when there is one).
Preparing a tree takes a minute or two, so outside CI a test whose trees are
not prepared yet skips; under CI (``CI`` set) the trees are prepared.

The real fix: one function's change between the two builds' sources (the
stable update that separates them), as ``git format-patch`` would mail it.
It ports to the older build cleanly and is already in the newer one.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import subprocess
from pathlib import Path

import pytest

from suture import bundle
from suture.builder import port, source
from suture.builder.compile import compile_pair
from suture.builder.elfobj import ObjectFile, SymBind, SymType
from suture.builder.fix import Fix
from suture.builder.pipeline import BuildRequest, build
from suture.builder.port import PortOutcome
from suture.errors import AlreadyFixedError
from suture.fsutil import cache_dir
from suture.packages import apt
from tests.builds import LAB
from tests.support.fixes import SYSCALL_EDITS
from tests.support.guest import require_qemu

# Where a fix of one function is looked for, in this order (files built into vmlinux).
SEARCHED = ("kernel", "mm", "fs", "net/ipv4", "net/core")


@functools.cache
def builds_with_source() -> list[tuple[str, str]]:
    """``(release, version)`` of the builds of the current series whose source apt offers."""
    newest = apt.default_release()  # e.g. 6.1.0-57-amd64
    parts = re.fullmatch(r"(\d+\.\d+)\.\d+-\d+-(.+)", newest)
    assert parts, f"unexpected release {newest}"
    series, flavour = parts.groups()
    pattern = re.compile(rf"linux-image-({re.escape(series)}\.\d+-(\d+)-{re.escape(flavour)})")
    names = subprocess.run(
        ["apt-cache", "pkgnames", "linux-image-"], capture_output=True, text=True, check=True
    ).stdout.split()
    images = [n for n in names if pattern.fullmatch(n)]
    # One madison for all (each apt-cache call reads the whole cache: about a second).
    table = subprocess.run(
        ["apt-cache", "madison", f"linux-source-{series}", *images],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    offered: dict[str, list[str]] = {}
    for line in table.splitlines():
        name, version, *_ = (f.strip() for f in line.split("|"))
        offered.setdefault(name, []).append(version)
    sources = set(offered.get(f"linux-source-{series}", []))
    found = []
    for name in images:
        match = pattern.fullmatch(name)
        if match and offered.get(name) and offered[name][0] in sources:
            found.append((int(match.group(2)), match.group(1), offered[name][0]))
    return [(release, version) for _, release, version in sorted(found, reverse=True)]


def upstream(version: str) -> tuple[int, ...]:
    """``6.1.187-1`` -> ``(6, 1, 187)``."""
    return tuple(int(x) for x in version.split("-", maxsplit=1)[0].split("."))


def prepared(release: str) -> source.SourceTree:
    """The prepared tree of ``release``; outside CI, skip rather than prepare it."""
    if not (source.source_dir(release) / "source.json").exists() and not os.environ.get("CI"):
        pytest.skip(f"the source of {release} is not prepared (CI prepares it)")
    return source.prepare(release)


@pytest.fixture(scope="module")
def newest() -> source.SourceTree:
    builds = builds_with_source()
    if not builds:
        pytest.fail("apt offers no kernel build with its source: run apt-get update")
    return prepared(builds[0][0])


@pytest.fixture(scope="module")
def older(newest: source.SourceTree) -> source.SourceTree:
    candidates = [
        release
        for release, version in builds_with_source()
        if upstream(version) < upstream(newest.version)
    ]
    if not candidates:
        pytest.fail(f"apt offers no source of an earlier upstream release than {newest.version}")
    ready = [r for r in candidates if (source.source_dir(r) / "source.json").exists()]
    return prepared((ready or candidates)[0])


def one_function_fix(old: source.SourceTree, new: source.SourceTree) -> tuple[str, str, str]:
    """``(path, function, diff)``: every hunk of the first function that changed between trees."""
    for top in SEARCHED:
        for path in sorted(p.relative_to(old.path) for p in (old.path / top).glob("*.c")):
            a, b = old.path / path, new.path / path
            if not b.is_file() or a.read_bytes() == b.read_bytes():
                continue
            text = subprocess.run(
                ["diff", "-u", "-p", "--label", f"a/{path}", "--label", f"b/{path}", a, b],
                capture_output=True, check=False,
            ).stdout.decode("utf-8", "surrogateescape")  # fmt: skip
            (fd,) = Fix.parse(text).commits[0].files
            by_function: dict[str, list[str]] = {}
            for hunk in fd.hunks:
                # diff -p names the function a hunk starts in after its "@@ ... @@".
                where = hunk.text.split("\n", 1)[0].rsplit("@@", 1)[1].strip()
                if "(" in where:
                    by_function.setdefault(where, []).append(hunk.text)
            if by_function:
                where, hunks = next(iter(by_function.items()))
                return str(path), where, f"--- a/{path}\n+++ b/{path}\n" + "".join(hunks)
    pytest.fail(f"no function changed between {old.version} and {new.version} in {SEARCHED}")


def as_mail(path: str, where: str, diff: str, version: str) -> str:
    function = where.split("(", maxsplit=1)[0].rsplit(maxsplit=1)[-1]
    return (
        "From 0000000000000000000000000000000000000001 Mon Sep 17 00:00:00 2001\n"
        "From: Suture Tests <tests@example.org>\n"
        "Date: Wed, 3 Dec 2025 10:00:00 +0000\n"
        f"Subject: [PATCH] {path}: {function} as in {version}\n\n"
        "The change the stable update made to this function (CVE-2099-0001).\n"
        f"---\n{diff}-- \n2.39.5\n\n"
    )


def test_a_real_fix_ports_to_the_older_build_and_is_in_the_newer(
    older: source.SourceTree, newest: source.SourceTree, tmp_path: Path
) -> None:
    path, where, diff = one_function_fix(older, newest)
    mail = tmp_path / "fix.mbox"
    mail.write_text(as_mail(path, where, diff, newest.version), errors="surrogateescape")
    fix = Fix.parse(mail.read_text(errors="surrogateescape"))
    assert fix.cves == ("CVE-2099-0001",)
    before = {t.release: (t.path / path).read_bytes() for t in (older, newest)}

    ported = port.port(fix, older.path, release=older.release)
    assert ported.outcome is PortOutcome.CLEAN, ported.to_dict()
    # The build-exact diff applies with patch -F0 (as the compile step does) and
    # gives the function its newer text.
    copy = tmp_path / "older"
    (copy / path).parent.mkdir(parents=True)
    (copy / path).write_bytes(before[older.release])
    subprocess.run(
        ["patch", "-p1", "-F0", "-s", "-d", str(copy)], input=ported.diff.encode(), check=True
    )
    hunks = diff.split("\n@@", 1)[1]
    added = [line[1:] for line in hunks.splitlines() if line.startswith("+") and line[1:].strip()]
    assert all(line in (copy / path).read_text(errors="replace") for line in added)

    contained = port.port(fix, newest.path, release=newest.release)
    assert contained.outcome is PortOutcome.CONTAINED, contained.to_dict()
    # The builder says so before compiling anything: exit 3, "fixed in this build".
    with pytest.raises(AlreadyFixedError, match=f"already in the source of {newest.release}"):
        build(BuildRequest(newest.release, mail, tmp_path / "out"), LAB)
    assert {t.release: (t.path / path).read_bytes() for t in (older, newest)} == before


# A syscall fix written for kpatch-build: uname(2) says "Linux.suture"; a
# KPATCH_PRINTK for a NULL buffer (never taken by a real uname).
def syscall_fix(tree: source.SourceTree, out: Path) -> Path:
    path = "kernel/sys.c"
    before = (tree.path / path).read_text()
    after = before
    for old, new in SYSCALL_EDITS:
        assert after.count(old) == 1, f"{old!r} not once in {path} of {tree.release}"
        after = after.replace(old, new)
    fix = out / "kpatch-syscall.patch"
    fix.write_text(
        "".join(
            difflib.unified_diff(
                before.splitlines(True), after.splitlines(True), f"a/{path}", f"b/{path}"
            )
        )
    )
    return fix


def functions(obj: ObjectFile) -> dict[str, int]:
    """Function name -> size."""
    return {s.name: s.size for s in obj.symbols if s.type == SymType.FUNC and s.name}


def test_kpatch_syscall_define_patches_the_stubs(newest: source.SourceTree, tmp_path: Path) -> None:
    (pair,) = compile_pair(newest, syscall_fix(newest, tmp_path), tmp_path / "objects")
    orig, patched = ObjectFile.load(pair.original), ObjectFile.load(pair.patched)
    before, after = functions(orig), functions(patched)
    # The kernel's names; the stubs are global, as SYSCALL_DEFINE1 makes them.
    stubs = ("__x64_sys_newuname", "__ia32_sys_newuname")
    for name in stubs:
        assert name in before
        assert name in after
        assert next(s for s in patched.symbols if s.name == name).bind == SymBind.GLOBAL
    # The body is inside the stubs now, not an out-of-line notrace __do_sys_newuname.
    assert "__do_sys_newuname" not in after
    assert "__se_sys_newuname" not in after
    assert all(after[s] > before[s] for s in stubs)
    # The trace metadata is the kernel's own, unchanged.
    data = {s.name for s in patched.symbols if s.type == SymType.OBJECT}
    assert {"__syscall_meta__newuname", "event_enter__newuname"} <= data


def test_kpatch_syscall_fix_builds(newest: source.SourceTree, tmp_path: Path) -> None:
    if not (cache_dir() / "kallsyms" / newest.release).exists():
        require_qemu()  # the build reads the build's kallsyms in a guest, once
    report = build(
        BuildRequest(
            newest.release, syscall_fix(newest, tmp_path), tmp_path, name="suture_t_kpsyscall"
        ),
        LAB,
    )
    assert report.port is not None
    assert report.port["outcome"] == "clean"
    manifest = bundle.read_manifest(tmp_path / "suture_t_kpsyscall.bundle")
    assert sorted(manifest.functions) == ["__ia32_sys_newuname", "__x64_sys_newuname"]
    assert report.carried == []
    assert report.unpatched == []
