"""The whole path in a guest: build on the host, then publish, serve and update inside the guest.

Two cumulative levels of a /proc/cmdline fix are built here with `suture
build` for the guest's kernel build; tests/kernel/test_agent.py then runs
the repository, the server (on the guest's loopback) and the agent inside
the guest, on the real kernel.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from suture.builder import source
from suture.builder.pipeline import BuildRequest, build
from suture.packages import kernels
from tests.builds import LAB
from tests.support.fixes import SHOW, make_fix
from tests.support.guest import require_qemu, run_guest_tests
from tests.support.userspace import HERE, userspace_bundles

pytestmark = pytest.mark.guest

# level -> the prefix that level puts before /proc/cmdline (each level is cumulative)
LEVELS = {1: "L1:", 2: "L2:"}


def test_update_path_in_guest(tmp_path: Path, kernel_release: str) -> None:
    require_qemu()
    tree = source.prepare(kernel_release)
    out = tmp_path / "bundles"
    for level, prefix in LEVELS.items():
        fix = make_fix(
            tree,
            "fs/proc/cmdline.c",
            (SHOW, f'\tseq_printf(m, "{prefix}%s", saved_command_line);\n'),
            out=tmp_path,
        )
        build(
            BuildRequest(
                kernel_release,
                fix,
                out,
                name=f"suture_cmdline_l{level}",
                cves=(f"CVE-2026-{9000 + level}",),
                level=level,
            ),
            LAB,
        )
    # A userspace level too: `suture update` in the guest applies both.
    userspace_bundles(out)
    subprocess.run(["gcc", "-O2", "-o", out / "ungetwc_loop", HERE / "ungetwc_loop.c"], check=True)
    env = {"SUTURE_TEST_BUNDLES": str(out)}
    run_guest_tests(kernels.fetch(kernel_release), "tests/kernel/test_agent.py", env)
