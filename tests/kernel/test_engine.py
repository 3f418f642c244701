"""The livepatch engine on the real Debian kernel: apply, status, unload, back-out, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from suture.kernel import module
from tests.support.inguest import ko, status, suture


def cmdline() -> str:
    return Path("/proc/cmdline").read_text().strip()


def patch_names() -> list[str]:
    return [p["name"] for p in status()["patches"]]  # type: ignore[attr-defined]


def test_apply_status_unload(modules: Path) -> None:
    original = cmdline()
    out = json.loads(suture("apply", str(ko(modules, "suture_test_v1")), "--json").stdout)
    assert out["ok"] and out["name"] == "suture_test_v1"
    assert cmdline() == "suture-test-v1"

    (patch,) = status()["patches"]  # type: ignore[misc]
    assert patch["name"] == "suture_test_v1"
    assert patch["enabled"] and not patch["transition"]
    (obj,) = patch["objects"]
    assert obj["name"] == "vmlinux" and obj["patched"]
    assert [f["name"] for f in obj["functions"]] == ["cmdline_proc_show"]

    suture("unload", "suture_test_v1")
    assert cmdline() == original
    assert not module.is_loaded("suture_test_v1")
    assert patch_names() == []


def test_stuck_transition_is_signalled_and_backed_out(modules: Path) -> None:
    # The reader sleeps 40 s in suture_sleeper_show, uninterruptibly: longer
    # than the 20 s limit, past the point (~15 s) where the core signals it.
    module.load(ko(modules, "suture_sleeper"), "delay_ms=40000")
    try:
        reader = subprocess.Popen(["cat", "/proc/suture_sleeper"], stdout=subprocess.PIPE)
        _wait_for_state(reader.pid, "D")
        started = time.monotonic()
        patch = str(ko(modules, "suture_sleeper_patch"))
        proc = suture("apply", patch, "--timeout", "20", expect=33)
        assert time.monotonic() - started < 35
        assert "did not finish within 20 s" in proc.stderr
        assert f"pid {reader.pid} (cat) in msleep < suture_sleeper_show" in proc.stderr
        assert "reversed" in proc.stderr
        log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
        assert "signaling remaining tasks" in log, log
        assert patch_names() == []
        assert not module.is_loaded("suture_sleeper_patch")
        out, _ = reader.communicate(timeout=60)
        assert out == b"original\n"
        # The kernel is healthy: the same patch applies once nobody sleeps in it.
        suture("apply", str(ko(modules, "suture_sleeper_patch")), "--timeout", "10")
        assert Path("/proc/suture_sleeper").read_text() == "patched\n"
        suture("unload", "suture_sleeper_patch")
    finally:
        module.unload("suture_sleeper")


def _wait_for_state(pid: int, state: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields[0] == state:
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} never reached state {state}")


def test_module_for_another_build_is_refused(modules: Path) -> None:
    other = modules / "other" / "suture_test_v1" / "suture_test_v1.ko"
    proc = suture("apply", str(other), "--json", expect=31)
    err = json.loads(proc.stdout)
    assert err["check"] == "kernel-build"
    running = Path("/proc/sys/kernel/osrelease").read_text().strip()
    other_release = os.environ["SUTURE_TEST_OTHER_KERNEL"]  # set by tests/test_guest_engine.py
    assert other_release in err["message"] and running in err["message"]
    assert not module.is_loaded("suture_test_v1")
    assert patch_names() == []


def test_cumulative_replace(modules: Path) -> None:
    suture("apply", str(ko(modules, "suture_test_v1")))
    out = json.loads(suture("apply", str(ko(modules, "suture_test_v2")), "--json").stdout)
    assert out["superseded"] == ["suture_test_v1"]
    assert cmdline() == "suture-test-v2"
    assert patch_names() == ["suture_test_v2"]
    assert not module.is_loaded("suture_test_v1")
    suture("unload", "--all")
    assert "suture-test" not in cmdline()


def test_sysfs_files_are_read_where_the_kernel_has_them(modules: Path) -> None:
    # 6.1 has neither `replace` nor `stack_order`, 6.12 `replace`, 7.3 both:
    # the engine reads what is there and says None for what is not.
    suture("apply", str(ko(modules, "suture_test_v1")))
    pdir = Path("/sys/kernel/livepatch/suture_test_v1")
    (patch,) = status()["patches"]  # type: ignore[misc]
    has_replace, has_order = (pdir / "replace").exists(), (pdir / "stack_order").exists()
    assert patch["replace"] == (False if has_replace else None)
    assert patch["stack_order"] == (1 if has_order else None)
    suture("apply", str(ko(modules, "suture_test_v2")))  # a cumulative level: replace on
    (patch,) = status()["patches"]  # type: ignore[misc]
    assert patch["name"] == "suture_test_v2"
    assert patch["replace"] == (True if has_replace else None)
    assert patch["stack_order"] == (1 if has_order else None)  # the one left
    suture("unload", "--all")
