"""The lab harness itself on the real kernel: exit status, streaming, panics and timeouts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.guest import require_qemu

pytestmark = pytest.mark.guest
SUTURE = [sys.executable, "-m", "suture.cli.main"]


def lab_run(*args: str) -> subprocess.CompletedProcess[str]:
    require_qemu()
    return subprocess.run(
        [*SUTURE, "lab", "run", *args], capture_output=True, text=True, check=False, timeout=300
    )


def test_command_output_status_and_host_root(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    marker.write_text("from the host\n")
    proc = lab_run(
        "--env", "GREETING=hello world", "--",
        "sh", "-c", f'cat {marker}; echo "$GREETING"; touch /usr/x; exit 7',
    )  # fmt: skip
    assert proc.returncode == 7, proc.stderr
    assert proc.stdout == "from the host\nhello world\n"
    assert not Path("/usr/x").exists()  # guest writes stay in the guest


def test_panic_is_an_error_with_the_console_tail() -> None:
    proc = lab_run("--json", "--", "sh", "-c", "echo c > /proc/sysrq-trigger")
    assert proc.returncode == 20, proc.stderr
    err = json.loads(proc.stdout)
    assert err["error"] == "guest"
    assert "Kernel panic" in err["console_tail"]
    assert "last lines of the guest console" in proc.stderr


def test_timeout_is_an_error() -> None:
    proc = lab_run("--timeout", "20", "--", "sleep", "600")
    assert proc.returncode == 20
    assert "did not finish within 20 s" in proc.stderr
