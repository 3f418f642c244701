"""suture.progress: transfers say bytes and percent, long steps say they still run."""

from __future__ import annotations

import logging
import time

import pytest

from suture import progress


def test_a_transfer_says_bytes_and_percent_at_most_every_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="suture")
    now = [0.0]
    t = progress.Transfer("downloading x", 4 << 20, every=2.0, clock=lambda: now[0])
    assert t.line(1 << 20) == "downloading x: 1.0 MiB of 4.0 MiB (25%)"
    t.update(1 << 20)  # too soon after the start
    now[0] = 2.5
    t.update(2 << 20)
    now[0] = 3.0
    t.update(3 << 20)  # too soon after the last line
    assert caplog.messages == ["downloading x: 2.0 MiB of 4.0 MiB (50%)"]
    assert progress.Transfer("y").line(512) == "y: 512 B"


def test_a_long_step_is_never_silent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="suture")
    with progress.heartbeat("make modules_prepare", every=0.05, measure=lambda: "3 files"):
        time.sleep(0.3)
    lines = caplog.messages
    assert len(lines) >= 3
    assert lines[0].startswith("make modules_prepare: still running (0 s, 3 files")
