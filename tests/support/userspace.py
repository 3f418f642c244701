"""Userspace patches on real processes: the shared cases, run on this host and in a lab guest.

tests/test_host_userspace.py runs them on this host (root, ptrace) with
bundles it builds; tests/kernel/test_userspace.py runs them in a guest booted
by tests/test_guest_userspace.py, with bundles built on the host. Each of
those modules collects the cases (``test_<case> = userspace.<case>``: this
module holds no tests itself) and gives the fixtures ``bundles`` (``glibc``, ``ssl``: bundle
paths) and ``programs`` (``ungetwc``, ``parked``, ``bn_loop``: built C programs).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from suture.bundle import archive
from suture.userspace import patcher

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "tests" / "userspace"
SUTURE = [sys.executable, "-m", "suture.cli.main"]
GLIBC_FIX = ROOT / "examples" / "userspace" / "glibc-ungetwc-CVE-2026-5928.patch"
SSL_FIX = ROOT / "examples" / "userspace" / "openssl-bn-ucmp.patch"
# s the parked thread stays inside BN_ucmp: longer in a guest, where each `suture` takes seconds
PARK = float(os.environ.get("SUTURE_TEST_PARK", "4"))


def run_suture(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SUTURE, "--json", *args], capture_output=True, text=True,
                          check=False, env={**os.environ, **(env or {})}, cwd=ROOT)  # fmt: skip


def userspace_bundles(out: Path) -> None:
    """The two userspace bundles in ``out``: built, or copied from SUTURE_TEST_USERSPACE_BUNDLES."""
    given = os.environ.get("SUTURE_TEST_USERSPACE_BUNDLES")
    if given:
        for bundle in Path(given).glob("*.bundle"):
            shutil.copy(bundle, out)
        return
    for fix, pkg in ((GLIBC_FIX, "glibc"), (SSL_FIX, "openssl")):
        r = run_suture("build", str(fix), "--package", pkg, "-o", str(out))
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["reproducible"]


class Target:
    """A long-running process whose last output line says which code it runs."""

    def __init__(self, argv: list[str], tmp: Path) -> None:
        self.log = tmp / f"out-{time.monotonic_ns()}.txt"
        self.proc = subprocess.Popen(argv, stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    def pid(self) -> int:
        return self.proc.pid

    def last(self, wait: float = 0.3) -> str:
        time.sleep(wait)
        deadline = time.monotonic() + 60  # a first line: Python starts slowly in a guest
        lines = self.log.read_text().splitlines()
        while not lines and time.monotonic() < deadline:
            time.sleep(0.1)
            lines = self.log.read_text().splitlines()
        return lines[-1] if lines else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def spawning(tmp_path: Path) -> Iterator[object]:
    """The body of each test module's ``spawn`` fixture: start targets, stop them after."""
    started: list[Target] = []

    def make(argv: list[str]) -> Target:
        t = Target(argv, tmp_path)
        started.append(t)
        time.sleep(0.5)
        return t

    yield make
    for t in started:
        t.stop()


def apply_to(bundle: Path, pid: int, *extra: str) -> dict[str, object]:
    r = run_suture("apply", str(bundle), "--pid", str(pid), *extra)
    return json.loads(r.stdout) if r.stdout else {"stderr": r.stderr}


def glibc_fix_in_a_c_program_then_unload(bundles, programs, spawn) -> None:
    t = spawn([str(programs["ungetwc"])])
    assert t.last() == "VULNERABLE"
    report = apply_to(bundles["glibc"], t.pid())
    assert report["processes"][0]["result"] == "patched", report
    assert t.last() == "FIXED"
    r = run_suture("unload", "glibc_ungetwc_cve_2026_5928", "--pid", str(t.pid()))
    assert r.returncode == 0, r.stderr
    assert t.last() == "VULNERABLE" and t.alive()


def openssl_fix_in_a_python_process(bundles, spawn) -> None:
    t = spawn(["python3", str(HERE / "bn_loop.py")])
    assert t.last().startswith("VULNERABLE")
    assert apply_to(bundles["ssl"], t.pid())["processes"][0]["result"] == "patched"
    assert t.last() == "FIXED"
    assert run_suture("unload", "openssl_bn_ucmp", "--pid", str(t.pid())).returncode == 0
    assert t.last().startswith("VULNERABLE")


def glibc_fix_in_a_python_process(bundles, spawn) -> None:
    t = spawn(["python3", str(HERE / "ungetwc_loop.py"), "/tmp/suture-py-a0.bin"])
    assert t.last() == "VULNERABLE"
    assert apply_to(bundles["glibc"], t.pid())["processes"][0]["result"] == "patched"
    assert t.last() == "FIXED"
    r = run_suture("unload", "glibc_ungetwc_cve_2026_5928", "--pid", str(t.pid()))
    assert r.returncode == 0
    assert t.last() == "VULNERABLE"


def openssl_fix_in_a_c_program(bundles, programs, spawn) -> None:
    t = spawn([str(programs["bn_loop"])])
    assert t.last().startswith("VULNERABLE")
    assert apply_to(bundles["ssl"], t.pid())["processes"][0]["result"] == "patched"
    assert t.last() == "FIXED"
    assert run_suture("unload", "openssl_bn_ucmp", "--pid", str(t.pid())).returncode == 0
    assert t.last().startswith("VULNERABLE")


@pytest.mark.parametrize("fix", ["glibc", "ssl"])
def a_process_in_its_own_mount_and_pid_namespace_is_found(bundles, programs, spawn, fix):
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    inside = [str(programs["ungetwc"]), "/tmp/suture-ns-a0.bin"] if fix == "glibc" else [
        "python3", str(HERE / "bn_loop.py")]  # fmt: skip
    t = spawn(["unshare", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", *inside])
    assert t.last().startswith("VULNERABLE")
    # By build id over every process (map_files): no --pid.
    r = run_suture("apply", str(bundles[fix]))
    data = json.loads(r.stdout)
    assert any(p["result"] == "patched" for p in data["processes"]), data
    assert t.last() == "FIXED"
    name = archive.members(bundles[fix])[0].name
    run_suture("unload", name)
    assert t.last().startswith("VULNERABLE")


def a_thread_parked_inside_blocks_the_switch_until_it_leaves(bundles, programs, spawn):
    t = spawn([str(programs["parked"]), str(PARK)])
    deadline = time.monotonic() + 10
    while "PARKED" not in t.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    busy = apply_to(bundles["ssl"], t.pid(), "--timeout", "0.5")
    assert busy["processes"][0]["result"] == "busy", busy
    assert "(frame " in busy["processes"][0]["reason"]  # unwound through the signal frame
    assert not patcher.applied_patches(t.pid())  # untouched: no region left behind
    done = apply_to(bundles["ssl"], t.pid(), "--timeout", str(PARK + 10))
    assert done["processes"][0]["result"] == "patched", done
    assert "LEFT" in t.log.read_text() and time.monotonic() - started >= PARK - 1.5
    assert t.alive()


@pytest.mark.parametrize("step", patcher.STEPS)
def a_patcher_killed_at_each_step_leaves_the_process_alive(bundles, programs, spawn, step):
    t = spawn([str(programs["ungetwc"])])
    r = run_suture("apply", str(bundles["glibc"]), "--pid", str(t.pid()),
                env={patcher.KILL_AT: step})  # fmt: skip
    assert r.returncode == -9
    expected = "FIXED" if step == "switched" else "VULNERABLE"
    assert t.last(0.5) == expected and t.alive()
    assert patcher.refusal(t.pid()) is None  # not left traced


def another_build_is_refused_by_the_hash_check(bundles, programs, spawn, tmp_path):
    manifest, data = archive.members(bundles["glibc"])
    f = dataclasses.replace(manifest.userspace_functions[0], old_sha256="0" * 64)
    other = dataclasses.replace(manifest, userspace_functions=(f,))
    path = tmp_path / "other.bundle"
    archive.write(path, other, data)
    t = spawn([str(programs["ungetwc"])])
    report = apply_to(path, t.pid())
    assert report["processes"][0]["result"] == "mismatch"
    assert t.last() == "VULNERABLE" and not patcher.applied_patches(t.pid())
