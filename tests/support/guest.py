"""Helpers of the host-side guest tests: skip without QEMU, boot a build and run tests inside."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from suture.errors import GuestError
from suture.lab import guest
from suture.packages import kernels

ROOT = Path(__file__).resolve().parents[2]


def require_qemu() -> None:
    if shutil.which(guest.QEMU) is None:
        if os.environ.get("CI") or os.environ.get("SUTURE_REQUIRE_GUEST"):
            pytest.fail(f"{guest.QEMU} is missing: CI must run the guest tests")
        pytest.skip(f"{guest.QEMU} is not installed")


def run_guest_tests(
    tree: kernels.KernelTree, path: str, env: dict[str, str], *, select: str = ""
) -> None:
    """Boot ``tree`` and run the in-guest tests in ``path`` (those ``select``, a ``-k``
    expression, picks); their output streams to ours."""
    argv = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", path]
    if select:
        argv += ["-k", select]
    try:
        result = guest.run(tree, argv, guest.GuestConfig(timeout=900, env=env), cwd=ROOT)
    except GuestError as e:  # the kernel's own report, not only "it panicked"
        pytest.fail(f"{e}\n--- the guest console's tail ---\n{e.console_tail}")
    assert result.returncode == 0, "the in-guest tests failed (their output is above)"
