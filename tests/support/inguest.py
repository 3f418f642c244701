"""Helpers of the tests that run inside a lab guest (tests/kernel): the CLI, the status, modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

IN_GUEST = os.environ.get("SUTURE_IN_GUEST") == "1"
SUTURE = [sys.executable, "-m", "suture.cli.main"]


def ko(modules: Path, name: str) -> Path:
    return modules / name / f"{name}.ko"


def suture(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*SUTURE, *args], capture_output=True, text=True, check=False)
    assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def status() -> dict[str, object]:
    # A state folder of its own: the exit code follows the agent's last check.
    shown = suture("status", "--json", "--state-dir", "/tmp/suture-no-agent")
    data: dict[str, object] = json.loads(shown.stdout)
    return data
