"""The Debian package in a clean Debian 12 root, and the agent from it in a guest of the build.

Here: ``scripts/package.sh`` builds suture-agent and suture-server; mmdebstrap
makes a clean Debian 12 root (minbase, python3 and systemd); the agent's
package installs into it with dpkg; its units pass ``systemd-analyze verify``
on the installed paths, and ``systemd-analyze security`` rates them at most
5.0. A real live patch for the guest's build is built too.

In the guest (tests/kernel/test_package.py): the repository and the fleet
server run from this checkout on the guest's loopback, and the agent runs
from the clean root (chroot: Debian's own Python 3.11 and the package's
libraries): it enrols, applies the level, reports, and its daemon cycles.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from suture.builder import source
from suture.builder.pipeline import BuildRequest, build
from suture.packages import kernels
from tests.builds import LAB
from tests.support.fixes import SHOW, make_fix
from tests.support.guest import ROOT, require_qemu, run_guest_tests

pytestmark = pytest.mark.guest

UNITS = ("suture-agent.service", "suture-boot.service")
MAX_EXPOSURE = 5.0


def require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        if os.environ.get("CI") or os.environ.get("SUTURE_REQUIRE_GUEST"):
            pytest.fail(f"{', '.join(missing)} missing: CI must run the package test")
        pytest.skip(f"{', '.join(missing)} not installed")


def run(*argv: str | Path, cwd: Path = ROOT) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_agent_package_in_a_clean_debian_12_root(tmp_path: Path, kernel_release: str) -> None:
    require_qemu()
    require("mmdebstrap", "dpkg-deb", "systemd-analyze", "chroot")
    dist = tmp_path / "dist"
    run("bash", "scripts/package.sh", dist)
    [agent] = dist.glob("suture-agent_*.deb")
    [server] = dist.glob("suture-server_*.deb")

    root = tmp_path / "debroot"
    # minbase, and what every host that runs the agent's units has: python3 and systemd.
    run("mmdebstrap", "--quiet", "--variant=minbase", "--include=python3,systemd", "bookworm", root)
    shutil.copy(agent, root / "tmp" / agent.name)
    run("chroot", root, "dpkg", "-i", f"/tmp/{agent.name}")
    assert run("chroot", root, "/usr/bin/suture", "--version").strip().startswith("suture ")
    assert (root / "usr/share/man/man1/suture.1.gz").exists()
    assert (root / "usr/share/bash-completion/completions/suture").exists()
    assert "# server = " in (root / "etc/suture/agent.toml").read_text()
    # The builder's and server's package adds their libraries to the same command.
    shutil.copy(server, root / "tmp" / server.name)
    run("chroot", root, "dpkg", "--force-depends", "-i", f"/tmp/{server.name}")  # no build tools
    probe = "import sys; sys.path[:0] = ['/usr/lib/suture', '/usr/lib/suture-server']; "
    run("chroot", root, "python3", "-I", "-c", probe + "import elftools, psycopg, suture.builder")

    # The units as installed: verify resolves ExecStart inside the root.
    installed = [f"/lib/systemd/system/{u}" for u in (*UNITS, "suture-server.service")]
    run("systemd-analyze", "verify", "--man=no", f"--root={root}", *installed)
    for unit in UNITS:
        out = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", root / "lib/systemd/system" / unit],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
        assert found and float(found.group(1)) <= MAX_EXPOSURE, out[-500:]

    release = kernel_release
    tree = source.prepare(release)
    fix = make_fix(
        tree, "fs/proc/cmdline.c", (SHOW, '\tseq_puts(m, "deb:");\n' + SHOW), out=tmp_path
    )
    bundles = tmp_path / "bundles"
    build(BuildRequest(release, fix, bundles, name="suture_deb_cmdline", level=1), LAB)
    env = {"SUTURE_TEST_DEBROOT": str(root), "SUTURE_TEST_BUNDLES": str(bundles)}
    run_guest_tests(kernels.fetch(release), "tests/kernel/test_package.py", env)
