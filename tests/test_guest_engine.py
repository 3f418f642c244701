"""Boot the real Debian kernel and run tests/kernel inside it (the engine on a real kernel).

The modules are built here on the host (kbuild under software emulation is
slow) against the fetched headers; the guest sees them through the host root.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from suture.packages import kernels
from tests import kmod
from tests.builds import other_release
from tests.support.guest import require_qemu, run_guest_tests

ROOT = Path(__file__).resolve().parent.parent
# A second, older build that is still in the archive: "a module built for another build".

pytestmark = pytest.mark.guest


def test_engine_in_guest(tmp_path: Path, kernel_release: str) -> None:
    require_qemu()
    tree = kernels.fetch(kernel_release)
    built = kmod.build(tree, tmp_path)
    other = kernels.fetch(other_release())
    kmod.build(other, tmp_path / "other", ("suture_test_v1",))
    assert set(built) == set(kmod.MODULES)
    run_guest_tests(
        tree,
        "tests/kernel/test_engine.py",
        {"SUTURE_TEST_MODULES": str(tmp_path), "SUTURE_TEST_OTHER_KERNEL": other_release()},
    )
