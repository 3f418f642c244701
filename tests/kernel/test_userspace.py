"""Userspace patches in the lab guest (booted by tests/test_guest_userspace.py).

The same cases as tests/test_host_userspace.py (from tests/support/userspace.py),
on the guest's kernel: the bundles and the small programs were built on the
host (the guest sees the host's root, so its glibc and OpenSSL are the same
builds) and are passed in ``SUTURE_TEST_USERSPACE``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import userspace

# The shared cases (tests/support/userspace.py), with this module's fixtures.
test_glibc_fix_in_a_c_program_then_unload = userspace.glibc_fix_in_a_c_program_then_unload
test_openssl_fix_in_a_python_process = userspace.openssl_fix_in_a_python_process
test_glibc_fix_in_a_python_process = userspace.glibc_fix_in_a_python_process
test_openssl_fix_in_a_c_program = userspace.openssl_fix_in_a_c_program
test_a_process_in_its_own_mount_and_pid_namespace_is_found = (
    userspace.a_process_in_its_own_mount_and_pid_namespace_is_found
)
test_a_thread_parked_inside_blocks_the_switch_until_it_leaves = (
    userspace.a_thread_parked_inside_blocks_the_switch_until_it_leaves
)
test_a_patcher_killed_at_each_step_leaves_the_process_alive = (
    userspace.a_patcher_killed_at_each_step_leaves_the_process_alive
)
test_another_build_is_refused_by_the_hash_check = (
    userspace.another_build_is_refused_by_the_hash_check
)

BUILT = Path(os.environ.get("SUTURE_TEST_USERSPACE", "/nonexistent"))


@pytest.fixture(scope="module")
def bundles() -> dict[str, Path]:
    made = {
        "glibc": BUILT / "glibc_ungetwc_cve_2026_5928.bundle",
        "ssl": BUILT / "openssl_bn_ucmp.bundle",
    }
    if not all(p.exists() for p in made.values()):
        pytest.fail(f"SUTURE_TEST_USERSPACE={BUILT} holds no bundles: the harness is broken")
    return made


@pytest.fixture(scope="module")
def programs() -> dict[str, Path]:
    return {name: BUILT / name for name in ("ungetwc_loop", "parked", "bn_loop")} | {
        "ungetwc": BUILT / "ungetwc_loop"
    }


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[object]:
    yield from userspace.spawning(tmp_path)
