"""The server's systemd units: sandboxed (systemd-analyze security), and the timer that keeps
the repository's metadata fresh runs often enough."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from suture.server import config
from tests.support.packaging import PACKAGING, unit

MAX_EXPOSURE = 2.5  # systemd-analyze's scale: 0 (locked down) to 10 (exposed)


@pytest.mark.parametrize("name", ["suture-server.service", "suture-repo-refresh.service"])
def test_the_server_units_are_sandboxed(name: str) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", name],
        cwd=PACKAGING / "systemd",
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
    assert found is not None, out.stdout + out.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, out.stdout


def test_the_refresh_timer_runs_before_the_timestamp_expires() -> None:
    timer = unit(PACKAGING / "systemd" / "suture-repo-refresh.timer")["Timer"]
    assert timer["OnCalendar"] == "*-*-* 00/6:00:00"  # four times a day: a day's timestamp
    assert timer["Persistent"] == "true"  # a run missed while down is made up at boot
    server = unit(PACKAGING / "systemd" / "suture-server.service")["Service"]
    assert server["DynamicUser"] == "yes" and server["ProtectSystem"] == "strict"
    assert "--admin-token-file" in server["ExecStart"]  # a token in its private state folder
    assert config.MIN_TOKEN >= 32
