"""Userspace patches in a lab guest: built on the host, applied to processes inside the guest.

The guest runs the Debian kernel of the builder's tests with the host's root
(so the same glibc and OpenSSL builds); tests/kernel/test_userspace.py runs
there. ``SUTURE_TEST_USERSPACE_BUNDLES`` may name a folder with the two
bundles already built (they take a few minutes the first time).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from suture.packages import kernels
from tests.support.guest import require_qemu, run_guest_tests
from tests.support.userspace import HERE, userspace_bundles

pytestmark = pytest.mark.guest


def test_userspace_in_guest(tmp_path: Path, kernel_release: str) -> None:
    require_qemu()
    userspace_bundles(tmp_path)
    subprocess.run(["gcc", "-O2", "-o", tmp_path / "ungetwc_loop", HERE / "ungetwc_loop.c"],
                   check=True)  # fmt: skip
    subprocess.run(["gcc", "-O2", "-o", tmp_path / "parked", HERE / "parked.c", "-lcrypto",
                    "-lpthread", "-ldl"], check=True)  # fmt: skip
    subprocess.run(["gcc", "-O2", "-o", tmp_path / "bn_loop", HERE / "bn_loop.c", "-lcrypto"],
                   check=True)  # fmt: skip
    env = {"SUTURE_TEST_USERSPACE": str(tmp_path), "SUTURE_TEST_PARK": "30"}
    run_guest_tests(kernels.fetch(kernel_release), "tests/kernel/test_userspace.py", env)
