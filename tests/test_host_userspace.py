"""Userspace live patches on real processes of this host (root, ptrace), with the real fixes.

Builds examples/userspace/*.patch from the Debian source of the installed glibc
and OpenSSL (cached trees; the first run fetches and configures them, a few
minutes), then patches long-running processes: a C program, a Python process, a
process in its own mount and PID namespace, a thread parked inside the patched
function, and a patcher killed at each step. Skips when not root or when the
libraries are not the versions the trees are for (not under CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from suture.agent import userlevels
from suture.userspace import image, patcher
from tests.support import userspace
from tests.support.userspace import GLIBC_FIX, HERE, SSL_FIX, apply_to, run_suture

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 and not os.environ.get("CI"), reason="needs root (ptrace, /proc/PID/mem)"
)

# The shared cases (tests/support/userspace.py), with this module's fixtures.
test_glibc_fix_in_a_c_program_then_unload = userspace.glibc_fix_in_a_c_program_then_unload
test_openssl_fix_in_a_python_process = userspace.openssl_fix_in_a_python_process
test_glibc_fix_in_a_python_process = userspace.glibc_fix_in_a_python_process
test_openssl_fix_in_a_c_program = userspace.openssl_fix_in_a_c_program
test_a_process_in_its_own_mount_and_pid_namespace_is_found = (
    userspace.a_process_in_its_own_mount_and_pid_namespace_is_found
)
test_a_thread_parked_inside_blocks_the_switch_until_it_leaves = (
    userspace.a_thread_parked_inside_blocks_the_switch_until_it_leaves
)
test_a_patcher_killed_at_each_step_leaves_the_process_alive = (
    userspace.a_patcher_killed_at_each_step_leaves_the_process_alive
)
test_another_build_is_refused_by_the_hash_check = (
    userspace.another_build_is_refused_by_the_hash_check
)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("bundles")
    made = {}
    for key, fix, pkg in (("glibc", GLIBC_FIX, "glibc"), ("ssl", SSL_FIX, "openssl")):
        started = time.monotonic()
        r = run_suture("build", str(fix), "--package", pkg, "-o", str(out))
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


def test_publish_then_update_applies_the_userspace_level_to_old_and_new_processes(
    bundles,
    programs,
    spawn,
    tmp_path,
):
    repo, state = tmp_path / "repo", tmp_path / "state"
    assert run_suture("repo", "init", str(repo)).returncode == 0
    r = run_suture("publish", str(bundles["glibc"]), "--repo", str(repo), "--untested")
    assert r.returncode == 0, r.stderr
    old = spawn([str(programs["ungetwc"])])
    assert old.last() == "VULNERABLE"
    agent = ("--server", repo.as_uri(), "--trusted-root", str(repo / "metadata" / "1.root.json"),
             "--state-dir", str(state))  # fmt: skip
    try:
        r = run_suture("update", *agent)
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
        r = run_suture("update", *agent)
        assert later.last() == "FIXED", r.stdout
        status = json.loads(run_suture("status", "--state-dir", str(state)).stdout)
        mine = next(u for u in status["userspace"] if u["library"] == "libc.so.6")
        assert mine["level"] == 1 and later.pid() in next(iter(mine["patched"].values()))
        rows = userlevels.checkin_rows(state)
        assert rows[0]["level"] == 1 and rows[0]["state"] in ("patched", "partial")
        assert rows[0]["processes"]["patched"] >= 3
    finally:
        run_suture("unload", "glibc_ungetwc_cve_2026_5928")


def test_a_switch_cut_short_is_finished_by_the_next_apply(bundles, programs, spawn):
    t = spawn([str(programs["ungetwc"])])
    r = run_suture("apply", str(bundles["glibc"]), "--pid", str(t.pid()),
                env={patcher.KILL_AT: "switching"})  # fmt: skip
    assert r.returncode == -9 and t.last() == "VULNERABLE"
    (region,) = patcher.regions(t.pid())
    assert region.state is image.State.SWITCHING  # the next run knows the jumps may be half-done
    assert apply_to(bundles["glibc"], t.pid())["processes"][0]["result"] == "patched"
    assert t.last() == "FIXED"
    assert [a.state for a in patcher.regions(t.pid())] == [image.State.LIVE]  # the old one unmapped


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[object]:
    yield from userspace.spawning(tmp_path)
