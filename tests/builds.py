"""The kernel builds the host-side guest tests use: resolved at run time, never pinned.

The archive moves (builds come and go), so a test names no build: it takes
``SUTURE_TEST_BUILD_KERNEL`` when set, else the distro's current build.
"""

from __future__ import annotations

import functools
import os

from suture.lab.kallsyms import GuestKallsyms
from suture.packages import sets

# Where the builder reads the builds' symbol positions: a guest of each build.
LAB = GuestKallsyms()


@functools.cache
def build_release() -> str:
    """The build the builder's guest tests patch."""
    return os.environ.get("SUTURE_TEST_BUILD_KERNEL") or sets.default_release()


@functools.cache
def other_release() -> str:
    """Another build of the same series and flavour in the archive (for wrong-build refusals)."""
    if env := os.environ.get("SUTURE_TEST_OTHER_KERNEL"):
        return env
    mine = build_release()
    found = sets.series_of(mine)
    if found is None:
        raise RuntimeError(f"{mine} is of no known series; set SUTURE_TEST_OTHER_KERNEL")
    series, _abi, flavour = found
    others = sorted(
        (r for r in series.releases((flavour,)) if r != mine and sets.order(r) < sets.order(mine)),
        key=sets.order,
    )
    if not others:
        raise RuntimeError(f"the archive has no older {flavour} build of {series.name} than {mine}")
    return others[-1]


@functools.cache
def newest(set_name: str) -> str:
    """The newest build of a kernel set in the archive today."""
    return sets.set_releases(set_name)[-1]
