"""Userspace live patches on real processes of this host (root, ptrace), with the real fixes.

Builds examples/userspace/*.patch from the Debian source of the installed glibc
and OpenSSL (cached trees; the first run fetches and configures them, a few
minutes), then patches long-running processes: a C program, a Python process, a
process in its own mount and PID namespace, a thread parked inside the patched
function, and a patcher killed at each step. Skips when not root or when the
libraries are not the versions the trees are for (not under CI).
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

from suture.agent import userlevels
from suture.bundle import archive
from suture.userspace import image, patcher

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "tests" / "userspace"
SUTURE = [sys.executable, "-m", "suture.cli.main"]
GLIBC_FIX = ROOT / "examples" / "userspace" / "glibc-ungetwc-CVE-2026-5928.patch"
SSL_FIX = ROOT / "examples" / "userspace" / "openssl-bn-ucmp.patch"
# s the parked thread stays inside BN_ucmp: longer in a guest, where each `suture` takes seconds
PARK = float(os.environ.get("SUTURE_TEST_PARK", "4"))

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 and not os.environ.get("CI"), reason="needs root (ptrace, /proc/PID/mem)"
)


def _suture(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SUTURE, "--json", *args], capture_output=True, text=True,
                          check=False, env={**os.environ, **(env or {})}, cwd=ROOT)  # fmt: skip


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("bundles")
    made = {}
    for key, fix, pkg in (("glibc", GLIBC_FIX, "glibc"), ("ssl", SSL_FIX, "openssl")):
        started = time.monotonic()
        r = _suture("build", str(fix), "--package", pkg, "-o", str(out))
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        assert data["reproducible"] == [f["name"] for f in data["functions"]]
        print(f"built {key} in {time.monotonic() - started:.1f} s", file=sys.stderr)
        made[key] = Path(data["bundle"])
    return made


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("bin")
    subprocess.run(["gcc", "-O2", "-o", out / "ungetwc_loop", HERE / "ungetwc_loop.c"], check=True)
    subprocess.run(["gcc", "-O2", "-o", out / "parked", HERE / "parked.c", "-lcrypto",
                    "-lpthread", "-ldl"], check=True)  # fmt: skip
    subprocess.run(["gcc", "-O2", "-o", out / "bn_loop", HERE / "bn_loop.c", "-lcrypto"],
                   check=True)  # fmt: skip
    return {"ungetwc": out / "ungetwc_loop", "parked": out / "parked", "bn_loop": out / "bn_loop"}


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


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[object]:
    started: list[Target] = []

    def make(argv: list[str]) -> Target:
        t = Target(argv, tmp_path)
        started.append(t)
        time.sleep(0.5)
        return t

    yield make
    for t in started:
        t.stop()


def _apply(bundle: Path, pid: int, *extra: str) -> dict[str, object]:
    r = _suture("apply", str(bundle), "--pid", str(pid), *extra)
    return json.loads(r.stdout) if r.stdout else {"stderr": r.stderr}


def test_glibc_fix_in_a_c_program_then_unload(bundles, programs, spawn) -> None:
    t = spawn([str(programs["ungetwc"])])
    assert t.last() == "VULNERABLE"
    report = _apply(bundles["glibc"], t.pid())
    assert report["processes"][0]["result"] == "patched", report
    assert t.last() == "FIXED"
    r = _suture("unload", "glibc_ungetwc_cve_2026_5928", "--pid", str(t.pid()))
    assert r.returncode == 0, r.stderr
    assert t.last() == "VULNERABLE" and t.alive()


def test_openssl_fix_in_a_python_process(bundles, spawn) -> None:
    t = spawn(["python3", str(HERE / "bn_loop.py")])
    assert t.last().startswith("VULNERABLE")
    assert _apply(bundles["ssl"], t.pid())["processes"][0]["result"] == "patched"
    assert t.last() == "FIXED"
    assert _suture("unload", "openssl_bn_ucmp", "--pid", str(t.pid())).returncode == 0
    assert t.last().startswith("VULNERABLE")


def test_glibc_fix_in_a_python_process(bundles, spawn) -> None:
    t = spawn(["python3", str(HERE / "ungetwc_loop.py"), "/tmp/suture-py-a0.bin"])
    assert t.last() == "VULNERABLE"
    assert _apply(bundles["glibc"], t.pid())["processes"][0]["result"] == "patched"
    assert t.last() == "FIXED"
    assert _suture("unload", "glibc_ungetwc_cve_2026_5928", "--pid", str(t.pid())).returncode == 0
    assert t.last() == "VULNERABLE"


def test_openssl_fix_in_a_c_program(bundles, programs, spawn) -> None:
    t = spawn([str(programs["bn_loop"])])
    assert t.last().startswith("VULNERABLE")
    assert _apply(bundles["ssl"], t.pid())["processes"][0]["result"] == "patched"
    assert t.last() == "FIXED"
    assert _suture("unload", "openssl_bn_ucmp", "--pid", str(t.pid())).returncode == 0
    assert t.last().startswith("VULNERABLE")


@pytest.mark.parametrize("fix", ["glibc", "ssl"])
def test_a_process_in_its_own_mount_and_pid_namespace_is_found(bundles, programs, spawn, fix):
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    inside = [str(programs["ungetwc"]), "/tmp/suture-ns-a0.bin"] if fix == "glibc" else [
        "python3", str(HERE / "bn_loop.py")]  # fmt: skip
    t = spawn(["unshare", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", *inside])
    assert t.last().startswith("VULNERABLE")
    # By build id over every process (map_files): no --pid.
    r = _suture("apply", str(bundles[fix]))
    data = json.loads(r.stdout)
    assert any(p["result"] == "patched" for p in data["processes"]), data
    assert t.last() == "FIXED"
    name = archive.members(bundles[fix])[0].name
    _suture("unload", name)
    assert t.last().startswith("VULNERABLE")


def test_a_thread_parked_inside_blocks_the_switch_until_it_leaves(bundles, programs, spawn):
    t = spawn([str(programs["parked"]), str(PARK)])
    deadline = time.monotonic() + 10
    while "PARKED" not in t.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    busy = _apply(bundles["ssl"], t.pid(), "--timeout", "0.5")
    assert busy["processes"][0]["result"] == "busy", busy
    assert "(frame " in busy["processes"][0]["reason"]  # unwound through the signal frame
    assert not patcher.applied_patches(t.pid())  # untouched: no region left behind
    done = _apply(bundles["ssl"], t.pid(), "--timeout", str(PARK + 10))
    assert done["processes"][0]["result"] == "patched", done
    assert "LEFT" in t.log.read_text() and time.monotonic() - started >= PARK - 1.5
    assert t.alive()


@pytest.mark.parametrize("step", patcher.STEPS)
def test_a_patcher_killed_at_each_step_leaves_the_process_alive(bundles, programs, spawn, step):
    t = spawn([str(programs["ungetwc"])])
    r = _suture("apply", str(bundles["glibc"]), "--pid", str(t.pid()),
                env={patcher.KILL_AT: step})  # fmt: skip
    assert r.returncode == -9
    expected = "FIXED" if step == "switched" else "VULNERABLE"
    assert t.last(0.5) == expected and t.alive()
    assert patcher.refusal(t.pid()) is None  # not left traced


def test_another_build_is_refused_by_the_hash_check(bundles, programs, spawn, tmp_path):
    manifest, data = archive.members(bundles["glibc"])
    f = dataclasses.replace(manifest.userspace_functions[0], old_sha256="0" * 64)
    other = dataclasses.replace(manifest, userspace_functions=(f,))
    path = tmp_path / "other.bundle"
    archive.write(path, other, data)
    t = spawn([str(programs["ungetwc"])])
    report = _apply(path, t.pid())
    assert report["processes"][0]["result"] == "mismatch"
    assert t.last() == "VULNERABLE" and not patcher.applied_patches(t.pid())


def test_publish_then_update_applies_the_userspace_level_to_old_and_new_processes(
    bundles, programs, spawn, tmp_path
):
    repo, state = tmp_path / "repo", tmp_path / "state"
    assert _suture("repo", "init", str(repo)).returncode == 0
    r = _suture("publish", str(bundles["glibc"]), "--repo", str(repo), "--untested")
    assert r.returncode == 0, r.stderr
    old = spawn([str(programs["ungetwc"])])
    assert old.last() == "VULNERABLE"
    agent = ("--server", repo.as_uri(), "--trusted-root", str(repo / "metadata" / "1.root.json"),
             "--state-dir", str(state))  # fmt: skip
    try:
        r = _suture("update", *agent)
        result = json.loads(r.stdout)
        row = next(u for u in result["userspace"] if u.get("soname") == "libc.so.6")
        assert (row["level"], row["applied"]) == (1, True), result
        assert old.last() == "FIXED"
        # Started after the level: the daemon's thread patches it as it starts...
        follower = userlevels.Reapply(state, log=print)
        follower.start()
        try:
            new = spawn([str(programs["ungetwc"])])
            assert new.last(1.0) == "FIXED"
        finally:
            follower.close()
        # ... and, without it, the next cycle's scan.
        later = spawn([str(programs["ungetwc"])])
        assert later.last() == "VULNERABLE"
        r = _suture("update", *agent)
        assert later.last() == "FIXED", r.stdout
        status = json.loads(_suture("status", "--state-dir", str(state)).stdout)
        mine = next(u for u in status["userspace"] if u["library"] == "libc.so.6")
        assert mine["level"] == 1 and later.pid() in next(iter(mine["patched"].values()))
        rows = userlevels.checkin_rows(state)
        assert rows[0]["level"] == 1 and rows[0]["state"] in ("patched", "partial")
        assert rows[0]["processes"]["patched"] >= 3
    finally:
        _suture("unload", "glibc_ungetwc_cve_2026_5928")


def test_a_switch_cut_short_is_finished_by_the_next_apply(bundles, programs, spawn):
    t = spawn([str(programs["ungetwc"])])
    r = _suture("apply", str(bundles["glibc"]), "--pid", str(t.pid()),
                env={patcher.KILL_AT: "switching"})  # fmt: skip
    assert r.returncode == -9 and t.last() == "VULNERABLE"
    (region,) = patcher.regions(t.pid())
    assert region.state is image.State.SWITCHING  # the next run knows the jumps may be half-done
    assert _apply(bundles["glibc"], t.pid())["processes"][0]["result"] == "patched"
    assert t.last() == "FIXED"
    assert [a.state for a in patcher.regions(t.pid())] == [image.State.LIVE]  # the old one unmapped
