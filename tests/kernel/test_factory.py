"""The patch factory's fix classes, applied on their own kernel build (tests/test_guest_factory.py).

Each bundle was built on the host from a fix the old builder refused or
could not take whole: a header fix reaching vmlinux and modules, a fix
given as a two-commit mbox.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.inguest import IN_GUEST, status, suture

BUNDLES = Path(os.environ.get("SUTURE_TEST_BUNDLES", "/nonexistent"))


@pytest.fixture(autouse=True)
def bundles_present() -> None:
    if IN_GUEST and not BUNDLES.is_dir():
        pytest.fail(f"SUTURE_TEST_BUNDLES={BUNDLES} holds no bundles: the harness is broken")


def apply(name: str) -> None:
    suture("apply", str(BUNDLES / f"{name}.bundle"))


def mount_options(where: Path) -> str:
    """The options /proc/mounts shows for the mount at ``where``."""
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1] == str(where):
            return fields[3]
    raise AssertionError(f"{where} is not mounted")


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A named cgroup v1 hierarchy (vmlinux) and an overlay mount (the overlay module)."""
    cgroup, scratch = tmp_path / "cg", tmp_path / "scratch"
    cgroup.mkdir()
    scratch.mkdir()
    subprocess.run(["mount", "-t", "cgroup", "-o", "none,name=suture_t", "cgroup", str(cgroup)],
                   check=True)  # fmt: skip
    # overlayfs cannot have its upper layer on the guest's own overlay root.
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(scratch)], check=True)
    for d in ("lower", "upper", "work", "merged"):
        (scratch / d).mkdir()
    merged = scratch / "merged"
    try:
        yield cgroup, merged
    finally:
        subprocess.run(["umount", str(merged)], check=False)
        subprocess.run(["umount", str(scratch)], check=False)
        subprocess.run(["umount", str(cgroup)], check=False)


def mount_overlay(merged: Path) -> None:
    scratch = merged.parent
    options = (
        f"lowerdir={scratch / 'lower'},upperdir={scratch / 'upper'},workdir={scratch / 'work'}"
    )
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)], check=True)


def test_header_fix_reaches_vmlinux_and_a_module(mounts: tuple[Path, Path]) -> None:
    # seq_show_option() is a static inline of include/linux/seq_file.h: the fix
    # changes cgroup1_show_options (vmlinux) and ovl_show_options (overlay), and
    # the filesystems' show functions of every other module that uses it.
    cgroup, merged = mounts
    assert ",name=suture_t" in "," + mount_options(cgroup)
    apply("suture_t_header")
    assert ",s:name=suture_t" in "," + mount_options(cgroup)
    subprocess.run(["modprobe", "overlay"], check=True)
    mount_overlay(merged)
    (patch,) = status()["patches"]  # type: ignore[misc]
    patched = {o["name"]: o["patched"] for o in patch["objects"]}  # type: ignore[index]
    assert patched["vmlinux"] and patched["overlay"], patched
    assert ",s:lowerdir=" in "," + mount_options(merged)
    suture("unload", "suture_t_header")
    assert ",name=suture_t" in "," + mount_options(cgroup)
    assert "s:" not in mount_options(cgroup) + mount_options(merged)


def test_two_commit_mbox() -> None:
    cmdline, version = Path("/proc/cmdline"), Path("/proc/version")
    before = cmdline.read_text(), version.read_text()
    apply("suture_t_mbox")
    assert cmdline.read_text() == "m1:" + before[0]
    assert version.read_text() == "m2:" + before[1]
    suture("unload", "suture_t_mbox")
    assert (cmdline.read_text(), version.read_text()) == before


def test_released_levels_replace_each_other_live() -> None:
    files = [Path("/proc/cmdline"), Path("/proc/version")]
    before = [f.read_text() for f in files]

    def marks() -> list[bool]:
        texts = [f.read_text() for f in files]
        loadavg = Path("/proc/loadavg").read_text()
        return [texts[0].startswith("r1:"), texts[1].startswith("r2:"), loadavg.startswith("r3:")]

    apply("suture_t_level1")
    assert marks() == [True, False, False]
    apply("suture_t_level2")  # atomic replace: level 1 retires as level 2 goes live
    assert [p["name"] for p in status()["patches"]] == ["suture_stable_l2"]  # type: ignore[attr-defined, index]
    assert marks() == [True, True, False]
    apply("suture_t_level3")
    assert [p["name"] for p in status()["patches"]] == ["suture_stable_l3"]  # type: ignore[attr-defined, index]
    assert marks() == [True, True, True]
    suture("unload", "suture_stable_l3")
    assert marks() == [False, False, False]
    assert [f.read_text() for f in files] == before
