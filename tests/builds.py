"""The kernel builds the host-side guest tests use: resolved at run time, never pinned.

The archive moves (builds come and go), so a test names no build: it takes
``SUTURE_TEST_BUILD_KERNEL`` when set, else the distro's current build.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess

from suture.lab.kallsyms import GuestKallsyms
from suture.packages import apt

# Where the builder reads the builds' symbol positions: a guest of each build.
LAB = GuestKallsyms()


@functools.cache
def build_release() -> str:
    """The build the builder's guest tests patch."""
    return os.environ.get("SUTURE_TEST_BUILD_KERNEL") or apt.default_release()


@functools.cache
def other_release() -> str:
    """Another build of the same series in the archive (for wrong-build refusals)."""
    if env := os.environ.get("SUTURE_TEST_OTHER_KERNEL"):
        return env
    mine = build_release()
    parts = re.match(r"^(\d+\.\d+\.\d+)-\d+-(\w[\w-]*)$", mine)  # 6.1.0-57-amd64
    if parts is None:
        raise RuntimeError(f"{mine} is not an ABI-numbered Debian release; set the variable")
    prefix, flavour = parts.groups()
    names = subprocess.run(
        ["apt-cache", "pkgnames", f"linux-image-{prefix}-"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    pattern = re.compile(rf"^linux-image-({re.escape(prefix)}-\d+-{flavour})$")
    others = sorted(m.group(1) for n in names if (m := pattern.match(n)) and m.group(1) != mine)
    if not others:
        raise RuntimeError(f"the archive has no other {flavour} build than {mine}")
    return others[-1]
