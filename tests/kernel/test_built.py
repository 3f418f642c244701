"""Bundles made by `suture build` (tests/test_guest_build.py), applied on their own kernel build."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.kernel.conftest import IN_GUEST, status, suture

BUNDLES = Path(os.environ.get("SUTURE_TEST_BUNDLES", "/nonexistent"))


@pytest.fixture(autouse=True)
def bundles_present() -> None:
    if IN_GUEST and not BUNDLES.is_dir():
        pytest.fail(f"SUTURE_TEST_BUNDLES={BUNDLES} holds no bundles: the harness is broken")


def cmdline() -> str:
    return Path("/proc/cmdline").read_text().strip()


def apply(name: str) -> None:
    suture("apply", str(BUNDLES / f"suture_t_{name}.bundle"))


def test_string_change() -> None:
    original = cmdline()
    apply("string")
    assert cmdline() == "v1:" + original
    suture("unload", "suture_t_string")
    assert cmdline() == original


def test_new_function() -> None:
    original = cmdline()
    apply("newfunc")
    assert cmdline() == "tagged:" + original


def test_new_static_local_and_global() -> None:
    original = cmdline()
    apply("statics")
    assert cmdline() == "1/10:" + original
    assert cmdline() == "2/20:" + original  # the state lives on between calls


def test_callbacks_with_kpatch_macros() -> None:
    original = cmdline()
    apply("callbacks")
    assert cmdline() == "cb42:" + original  # the pre-patch callback ran first


def test_shadow_variable() -> None:
    original = cmdline()
    apply("shadow")
    assert cmdline() == "sh1:" + original
    assert cmdline() == "sh2:" + original
    suture("unload", "suture_t_shadow")  # the post-unpatch callback frees the shadow
    apply("shadow")
    assert cmdline() == "sh1:" + original


def test_module_patch_applies_when_the_module_loads() -> None:
    apply("mrp")
    (patch,) = status()["patches"]  # type: ignore[misc]
    assert (
        patch["objects"]
        == [{"name": "mrp", "patched": False, "functions": [{"name": "mrp_rcv", "sympos": 1}]}]
        or patch["objects"][0]["name"] == "mrp"
    )
    subprocess.run(["modprobe", "mrp"], check=True)
    (patch,) = status()["patches"]  # type: ignore[misc]
    assert patch["objects"][0]["patched"]
    log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    assert "applying patch 'suture_t_mrp' to loading module 'mrp'" in log
    suture("unload", "suture_t_mrp")
    subprocess.run(["modprobe", "-r", "mrp"], check=True)
