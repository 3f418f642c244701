"""Tests that run inside a lab guest on the real kernel (booted by tests/test_guest_engine.py).

Outside a guest they are skipped; inside one, a broken environment fails
them loudly instead of letting them pass or skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from suture.kernel import engine
from suture.kernel.livepatch import LivepatchSysfs

IN_GUEST = os.environ.get("SUTURE_IN_GUEST") == "1"
SUTURE = [sys.executable, "-m", "suture.cli.main"]


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


def ko(modules: Path, name: str) -> Path:
    return modules / name / f"{name}.ko"


@pytest.fixture(autouse=True)
def clean_kernel() -> Iterator[None]:
    """Every test starts and ends with no live patch, and the kernel log stays clean."""
    subprocess.run(["dmesg", "-C"], check=True)
    yield
    engine.unload_all()
    log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    assert "Call Trace" not in log, log
    assert "WARNING" not in log, log


def suture(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*SUTURE, *args], capture_output=True, text=True, check=False)
    assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def status() -> dict[str, object]:
    # A state folder of its own: the exit code follows the agent's last check.
    shown = suture("status", "--json", "--state-dir", "/tmp/suture-no-agent")
    data: dict[str, object] = json.loads(shown.stdout)
    return data
