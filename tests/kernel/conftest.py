"""Tests that run inside a lab guest on the real kernel (booted by tests/test_guest_engine.py).

Outside a guest they are skipped; inside one, a broken environment fails
them loudly instead of letting them pass or skip.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from suture.kernel import engine
from suture.kernel.livepatch import LivepatchSysfs
from tests.support.inguest import IN_GUEST


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if IN_GUEST:
        return
    skip = pytest.mark.skip(reason="runs inside a lab guest: tests/test_guest_engine.py boots one")
    for item in items:
        if "tests/kernel" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def modules() -> Path:
    path = Path(os.environ.get("SUTURE_TEST_MODULES", ""))
    if not (path / "suture_test_v1" / "suture_test_v1.ko").exists():
        pytest.fail(f"SUTURE_TEST_MODULES={path} holds no test modules: the harness is broken")
    if not LivepatchSysfs().available():
        pytest.fail("the guest kernel has no /sys/kernel/livepatch: the lab is broken")
    return path


@pytest.fixture(autouse=True)
def clean_kernel() -> Iterator[None]:
    """Every test starts and ends with no live patch, and the kernel log stays clean."""
    subprocess.run(["dmesg", "-C"], check=True)
    yield
    engine.unload_all()
    log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    assert "Call Trace" not in log, log
    assert "WARNING" not in log, log
