"""``suture test`` for real: the example fix built for the current build, tested, published.

The bundle is built with ``suture build`` for the current default Debian
build (resolved now, never pinned). ``suture test`` boots that build under
QEMU, runs stress-ng and module churn, and runs a test script before, with
and after the patch. A script that shows the bug passes the test and the
bundle publishes without ``--untested``; a script that passes even without
the patch fails it, and publish refuses the bundle.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from suture import bundle
from suture.packages import kernels, vmlinux
from tests.support.guest import require_qemu

pytestmark = pytest.mark.guest

ROOT = Path(__file__).resolve().parent.parent
SUTURE = [sys.executable, "-m", "suture.cli.main"]
FIX = ROOT / "examples/proc-cmdline.patch"
# Exits 0 only when /proc/cmdline starts with the mark the fix adds.
SHOWS_THE_BUG = ROOT / "examples/proc-cmdline.test.sh"


def suture(*args: str, expect: int) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*SUTURE, *args], capture_output=True, text=True, check=False)
    assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def as_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example fix built for the current default build."""
    require_qemu()
    if shutil.which("stress-ng") is None:
        pytest.fail("stress-ng is missing: scripts/setup.sh installs it")
    release = kernels.fetch(None).release
    out = tmp_path_factory.mktemp("tester")
    suture(
        "build", str(FIX), "--kernel", release, "-o", str(out), "--name", "suture_tested", expect=0
    )
    return out / "suture_tested.bundle"


def test_a_patch_that_fixes_what_its_test_shows_passes_and_publishes(
    built: Path, tmp_path: Path
) -> None:
    path = tmp_path / built.name
    shutil.copy(built, path)
    before = bundle.read_manifest(path)
    tree = kernels.fetch(before.release)

    data = as_json(suture("test", str(path), "--test", str(SHOWS_THE_BUG), "--json", expect=0))
    [result] = data["bundles"]
    assert (data["format"], data["ok"], result["result"]) == (1, True, "passed"), data

    manifest = bundle.read_manifest(path)
    test = manifest.test
    assert test is not None and test.passed
    assert (test.release, test.build_id) == (
        tree.release,
        vmlinux.build_id(tree.vmlinuz, tree.vmlinux),
    )
    assert test.holds_for(manifest.release, manifest.build_id)
    steps = {s.name: s for s in test.steps}
    assert list(steps) == ["before", "apply", "patched", "unload", "after", "load", "kernel-log"]
    assert (steps["before"].exit, steps["patched"].exit, steps["after"].exit) == (1, 0, 1)
    assert "load/unload cycles of crc" in steps["load"].detail
    assert test.script == SHOWS_THE_BUG.name and set(test.taint) <= set("KOE")
    assert any("patching complete" in line for line in test.kernel_log)
    log = path.with_suffix(".kernel.log")
    assert test.kernel_log_sha256 == hashlib.sha256(log.read_bytes()).hexdigest()
    assert manifest.module_sha256 == before.module_sha256  # the same module, rewritten manifest

    repo = tmp_path / "repo"
    suture("repo", "init", str(repo), expect=0)
    published = as_json(suture("publish", str(path), "--repo", str(repo), "--json", expect=0))
    assert published["test"] == "passed"


def test_a_script_that_passes_without_the_patch_fails_and_publish_refuses(
    built: Path, tmp_path: Path
) -> None:
    path = tmp_path / built.name
    shutil.copy(built, path)
    always = tmp_path / "always.sh"
    always.write_text("#!/bin/sh\necho fine\n")
    always.chmod(0o755)

    data = as_json(suture("test", str(path), "--test", str(always), "--json", expect=91))
    assert data["ok"] is False and data["bundles"][0]["result"] == "failed"
    test = bundle.read_manifest(path).test
    assert test is not None and not test.passed
    assert [s.name for s in test.steps if not s.ok] == ["before", "after"]
    assert test.reason.startswith("before: it passes without the patch")

    repo = tmp_path / "repo"
    suture("repo", "init", str(repo), expect=0)
    refused = suture("publish", str(path), "--repo", str(repo), expect=62)
    assert "failed its test" in refused.stderr and "--untested" in refused.stderr
