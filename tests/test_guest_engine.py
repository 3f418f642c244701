"""Boot the real Debian kernel and run tests/kernel inside it (the engine on a real kernel).

The modules are built here on the host (kbuild under software emulation is
slow) against the fetched headers; the guest sees them through the host root.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from suture.errors import GuestError
from suture.lab import guest, kernels
from tests import kmod
from tests.builds import build_release, other_release

ROOT = Path(__file__).resolve().parent.parent
# A second, older build that is still in the archive: "a module built for another build".

pytestmark = pytest.mark.guest


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


def test_engine_in_guest(tmp_path: Path) -> None:
    require_qemu()
    tree = kernels.fetch(build_release())
    built = kmod.build(tree, tmp_path)
    other = kernels.fetch(other_release())
    kmod.build(other, tmp_path / "other", ("suture_test_v1",))
    assert set(built) == set(kmod.MODULES)
    run_guest_tests(
        tree,
        "tests/kernel/test_engine.py",
        {"SUTURE_TEST_MODULES": str(tmp_path), "SUTURE_TEST_OTHER_KERNEL": other_release()},
    )
