"""Userspace patches in a lab guest: built on the host, applied to processes inside the guest.

The guest runs the Debian kernel of the builder's tests with the host's root
(so the same glibc and OpenSSL builds); tests/kernel/test_userspace.py runs
there. ``SUTURE_TEST_USERSPACE_BUNDLES`` may name a folder with the two
bundles already built (they take a few minutes the first time).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from suture.lab import kernels
from tests.builds import build_release
from tests.test_guest_engine import require_qemu, run_guest_tests
from tests.test_host_userspace import GLIBC_FIX, HERE, ROOT, SSL_FIX

pytestmark = pytest.mark.guest


def userspace_bundles(out: Path) -> None:
    """The two userspace bundles in ``out``: built, or copied from SUTURE_TEST_USERSPACE_BUNDLES."""
    given = os.environ.get("SUTURE_TEST_USERSPACE_BUNDLES")
    for fix, pkg in ((GLIBC_FIX, "glibc"), (SSL_FIX, "openssl")):
        if given:
            continue
        r = subprocess.run(
            [sys.executable, "-m", "suture.cli.main", "--json", "build", str(fix), "--package",
             pkg, "-o", str(out)], capture_output=True, text=True, check=False, cwd=ROOT,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["reproducible"]
    if given:
        for bundle in Path(given).glob("*.bundle"):
            shutil.copy(bundle, out)


def test_userspace_in_guest(tmp_path: Path) -> None:
    require_qemu()
    userspace_bundles(tmp_path)
    subprocess.run(["gcc", "-O2", "-o", tmp_path / "ungetwc_loop", HERE / "ungetwc_loop.c"],
                   check=True)  # fmt: skip
    subprocess.run(["gcc", "-O2", "-o", tmp_path / "parked", HERE / "parked.c", "-lcrypto",
                    "-lpthread", "-ldl"], check=True)  # fmt: skip
    subprocess.run(["gcc", "-O2", "-o", tmp_path / "bn_loop", HERE / "bn_loop.c", "-lcrypto"],
                   check=True)  # fmt: skip
    env = {"SUTURE_TEST_USERSPACE": str(tmp_path), "SUTURE_TEST_PARK": "30"}
    run_guest_tests(kernels.fetch(build_release()), "tests/kernel/test_userspace.py", env)
