"""A bundle whose changed function has no ftrace entry (tests/test_guest_callers.py builds it)."""

from __future__ import annotations

import errno
import os
import subprocess
import threading
from pathlib import Path

import pytest

from tests.support.inguest import IN_GUEST, status, suture

BUNDLES = Path(os.environ.get("SUTURE_TEST_BUNDLES", "/nonexistent"))


@pytest.fixture(autouse=True)
def bundles_present() -> None:
    if IN_GUEST and not BUNDLES.is_dir():
        pytest.fail(f"SUTURE_TEST_BUNDLES={BUNDLES} holds no bundles: the harness is broken")


def test_carried_function_reached_through_patched_callers(tmp_path: Path) -> None:
    denied, other = tmp_path / "suture-denied", tmp_path / "suture-other"
    suture("apply", str(BUNDLES / "suture_t_callers.bundle"))
    (patch,) = status()["patches"]  # type: ignore[misc]
    assert patch["objects"][0]["patched"]
    with pytest.raises(PermissionError):
        denied.mkdir()  # vfs_mkdir -> the carried may_create
    with pytest.raises(PermissionError):
        os.mkfifo(denied)  # vfs_mknod
    with pytest.raises(PermissionError):
        denied.symlink_to(other)  # vfs_symlink
    other.mkdir()
    suture("unload", "suture_t_callers")
    denied.mkdir()
    assert denied.is_dir()


def test_carried_function_reached_from_callers_in_other_files() -> None:
    uuid = Path("/proc/sys/kernel/random/uuid")
    assert uuid.read_text() != uuid.read_text()
    suture("apply", str(BUNDLES / "suture_t_uuid.bundle"))
    # proc_do_uuid (drivers/char/random.c) now calls the carried generate_random_uuid.
    assert uuid.read_text().strip() == "5a5a5a5a-5a5a-4a5a-9a5a-5a5a5a5a5a5a"
    suture("unload", "suture_t_uuid")
    assert uuid.read_text() != uuid.read_text()


def wait4_probe() -> str:
    try:
        os.wait4(-4242, 0)
    except OSError as e:
        return errno.errorcode[e.errno]
    return "no error"


def test_syscall_body_patched_through_framed_wrappers() -> None:
    assert wait4_probe() == "ECHILD"
    sleeper = subprocess.Popen(["sleep", "3"])  # a task asleep in wait4 (the thread below)
    waiter = threading.Thread(target=sleeper.wait)
    waiter.start()
    try:
        suture("apply", str(BUNDLES / "suture_t_wait4.bundle"))
        assert wait4_probe() == "ENOTTY"  # __x64_sys_wait4 -> the carried __do_sys_wait4
    finally:
        waiter.join()
    assert sleeper.returncode == 0  # the wait that began in the old body ended well
    suture("unload", "suture_t_wait4")
    assert wait4_probe() == "ECHILD"
