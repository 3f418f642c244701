"""Pre-match on the real kernel: genuine patches pass their own check, altered ones refuse.

The bundles come from tests/test_guest_prematch.py: genuine ones for vmlinux
and for modules (their check must pass against the code this kernel really
runs: relocations, ftrace, alternatives, static keys and calls all rewritten
in memory), and copies whose expected bytes were altered in one checked
byte (suture_pm_bad_*.bundle: the same patch, the same module name).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from suture.kernel.livepatch import LivepatchSysfs
from tests.support.inguest import IN_GUEST, status, suture

BUNDLES = Path(os.environ.get("SUTURE_TEST_BUNDLES", "/nonexistent"))
# name -> the module its fix is in ("" : vmlinux); from tests/test_guest_prematch.py
GENUINE = json.loads(os.environ.get("SUTURE_TEST_GENUINE", "{}"))


@pytest.fixture(autouse=True)
def bundles_present() -> None:
    if IN_GUEST and not (BUNDLES.is_dir() and GENUINE):
        pytest.fail(f"SUTURE_TEST_BUNDLES={BUNDLES} holds no bundles: the harness is broken")


def bundle(name: str) -> str:
    return str(BUNDLES / f"{name}.bundle")


def loaded(module: str) -> bool:
    return Path("/sys/module", module, "initstate").exists()


def modprobe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["modprobe", *args], capture_output=True, text=True, check=False)


def test_every_genuine_patch_passes_its_check_on_the_running_code() -> None:
    for name, module in sorted(GENUINE.items()):
        if module:
            modprobe("-r", module)  # the check runs again as it loads
        suture("apply", bundle(name))
        if module:
            done = modprobe(module)
            assert done.returncode == 0, (name, done.stderr)
        (patch,) = status()["patches"]  # type: ignore[misc]
        assert all(o["patched"] for o in patch["objects"]), (name, patch)
        assert patch["prematch_refused"] == [], (name, patch)
        suture("unload", name)


def test_an_altered_vmlinux_patch_is_refused_before_anything_is_redirected() -> None:
    before = Path("/proc/cmdline").read_text()
    done = suture("--json", "apply", bundle("suture_pm_bad_cmdline"), expect=31)
    error = json.loads(done.stdout)
    assert (error["error"], error["check"]) == ("pre-match", "pre-match")
    assert (error["object"], error["function"]) == ("vmlinux", "cmdline_proc_show")
    assert "vmlinux:cmdline_proc_show is not the code" in done.stderr
    # The kernel is as it was: no patch, no module, the old behaviour.
    assert LivepatchSysfs().names() == []
    assert not loaded("suture_pm_cmdline")
    assert Path("/proc/cmdline").read_text() == before
    log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    assert "suture: pre-match: suture_pm_cmdline: vmlinux:cmdline_proc_show" in log
    # Refused in the pre-patch callback: the core never started a transition
    # (its messages after a refusal are "failed to enable" and "unpatching complete").
    assert "pre-patch callback failed for object 'vmlinux'" in log
    assert "starting patching transition" not in log
    assert "'suture_pm_cmdline': patching complete" not in log


def test_an_altered_module_patch_refuses_the_module_as_it_loads() -> None:
    modprobe("-r", "mrp")
    suture("apply", bundle("suture_pm_bad_mrp"))  # mrp is not loaded: nothing to check yet
    done = modprobe("mrp")
    assert done.returncode != 0, "the module loaded although its patch refused it"
    assert not loaded("mrp")
    (patch,) = status()["patches"]  # type: ignore[misc]
    assert patch["prematch_refused"] == ["mrp:mrp_rcv"]
    shown = suture("status", "--state-dir", "/tmp/suture-no-agent").stdout
    assert "REFUSED by pre-match: mrp:mrp_rcv" in shown
    log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    assert "suture: pre-match: suture_pm_mrp: mrp:mrp_rcv" in log
    suture("unload", "suture_pm_mrp")
    assert modprobe("mrp").returncode == 0  # without the patch the module loads as ever
    modprobe("-r", "mrp")
