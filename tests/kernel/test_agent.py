"""Repository, server and agent on the real kernel (booted by tests/test_guest_agent.py).

The bundles were built on the host for this kernel build by `suture build`:
suture_cmdline_l1 (level 1, "L1:" before /proc/cmdline) and
suture_cmdline_l2 (level 2, "L2:"). Everything else happens here: `suture
repo init` and `suture publish` into the guest's tmpfs, `suture serve` on
the guest's loopback, and the agent commands against it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from suture import bundle
from suture.agent import guard
from tests.support.inguest import IN_GUEST, SUTURE, suture

BUNDLES = Path(os.environ.get("SUTURE_TEST_BUNDLES", "/nonexistent"))
PORT = 8470
SERVER = f"http://127.0.0.1:{PORT}"
WORK = Path("/tmp/agent-test")
REPO, STATE, CONFIG = WORK / "repo", WORK / "state", WORK / "agent.toml"
ADMIN_TOKEN = WORK / "admin.token"


def cmdline() -> str:
    return Path("/proc/cmdline").read_text().strip()


def level_bundle(level: int) -> Path:
    return BUNDLES / f"suture_cmdline_l{level}.bundle"


@pytest.fixture(scope="module")
def original() -> str:
    if IN_GUEST and not level_bundle(2).exists():
        pytest.fail(f"SUTURE_TEST_BUNDLES={BUNDLES} holds no bundles: the harness is broken")
    return cmdline()


@pytest.fixture(scope="module")
def server(original: str) -> Iterator[subprocess.Popen[bytes]]:
    WORK.mkdir(parents=True, exist_ok=True)
    suture("repo", "init", str(REPO))
    proc = start_server()
    fleet = ("--server", SERVER, "--admin-token-file", str(ADMIN_TOKEN), "--json")
    key = json.loads(suture("fleet", "key", "create", "--tag", "env:lab", *fleet).stdout)
    CONFIG.write_text(
        f'server = "{SERVER}"\n'
        f'trusted_root = "{REPO}/metadata/1.root.json"\n'
        f'state_dir = "{STATE}"\n'
        f'registration_key = "{key["registration_key"]}"\n'
        "retries = 2\nretry_backoff = 0.2\ntimeout = 5\n"
    )
    yield proc
    proc.terminate()
    proc.wait(timeout=30)


def start_server() -> subprocess.Popen[bytes]:
    argv = [*SUTURE, "serve", "--repo", str(REPO), "--listen", f"127.0.0.1:{PORT}"]
    argv += ["--admin-token-file", str(ADMIN_TOKEN)]
    proc = subprocess.Popen([*argv, "--db", f"sqlite:///{WORK}/server.db"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{SERVER}/healthz", timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail("suture serve did not answer /healthz within 60 s")


def agent(*args: str, expect: int = 0) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        suture(*args, "--config", str(CONFIG), "--json", expect=expect).stdout
    )
    return data


def publish(path: Path) -> None:
    # --untested: this guest cannot boot the guests `suture test` needs (no nested
    # QEMU here); the agent's path is what is tested. tests/test_guest_tester.py
    # tests the gate.
    suture("publish", str(path), "--repo", str(REPO), "--untested")


def status() -> dict[str, Any]:
    proc = subprocess.run(
        [*SUTURE, "status", "--json", "--state-dir", str(STATE)],
        capture_output=True,
        text=True,
        check=False,
    )
    data: dict[str, Any] = json.loads(proc.stdout)
    data["exit"] = proc.returncode
    return data


def enabled(data: dict[str, Any]) -> list[str]:
    return [p["name"] for p in data["patches"] if p["enabled"]]


def hosts() -> list[dict[str, Any]]:
    request = urllib.request.Request(f"{SERVER}/api/v1/hosts")  # noqa: S310 - loopback
    request.add_header("Authorization", f"Bearer {ADMIN_TOKEN.read_text().strip()}")
    with urllib.request.urlopen(request, timeout=5) as r:  # noqa: S310
        data: list[dict[str, Any]] = json.load(r)["hosts"]
        return data


def uname() -> str:
    return suture("uname", "-r", "--state-dir", str(STATE)).stdout.strip()


def test_publish_serve_update_replace_unload(
    server: subprocess.Popen[bytes], original: str
) -> None:
    release = os.uname().release
    assert agent("update", expect=1)["outcome"] == "no-patches"
    publish(level_bundle(1))
    result = agent("update")
    assert (result["outcome"], result["level"], result["cves"]) == ("applied", 1, ["CVE-2026-9001"])
    assert cmdline() == "L1:" + original
    shown = status()
    assert shown["exit"] == 0
    assert enabled(shown) == ["suture_cmdline_l1"]
    assert (shown["agent"]["level"], shown["agent"]["cves"]) == (1, ["CVE-2026-9001"])
    assert shown["agent"]["last_check"]["result"] == "applied"
    assert uname() == f"{release}+suture.L1"
    [host] = hosts()
    assert (host["level"], host["state"], host["patches"]) == (1, "patched", ["suture_cmdline_l1"])
    assert host["tags"] == ["env:lab"]  # from the registration key it enrolled with
    assert host["functions"] == ["vmlinux:cmdline_proc_show"]

    assert agent("update")["outcome"] == "up-to-date"  # nothing new: nothing changes
    publish(level_bundle(2))
    assert agent("info", expect=2)["available"] == 2
    result = agent("update")
    assert (result["outcome"], result["previous"], result["level"]) == ("applied", 1, 2)
    assert result["superseded"] == ["suture_cmdline_l1"]
    assert cmdline() == "L2:" + original
    assert enabled(status()) == ["suture_cmdline_l2"]
    assert uname() == f"{release}+suture.L2"
    assert hosts()[0]["level"] == 2

    suture("unload", "--all")
    assert cmdline() == original
    assert uname() == release
    assert status()["agent"]["level"] == 0


def _line_until(proc: subprocess.Popen[str], wanted: str, seconds: float = 20.0) -> str:
    """Read the program's lines until one is ``wanted`` (or time runs out); the last one read."""
    assert proc.stdout is not None
    deadline = time.monotonic() + seconds
    line = ""
    while time.monotonic() < deadline and line != wanted:
        line = proc.stdout.readline().strip()
    return line


def test_update_applies_the_kernel_and_the_userspace_levels(
    server: subprocess.Popen[bytes], original: str
) -> None:
    glibc = BUNDLES / "glibc_ungetwc_cve_2026_5928.bundle"
    if not glibc.exists():
        pytest.fail(
            f"SUTURE_TEST_BUNDLES={BUNDLES} holds no userspace bundle: the harness is broken"
        )
    publish(glibc)
    program = [str(BUNDLES / "ungetwc_loop"), str(WORK / "a0.bin")]
    proc = subprocess.Popen(program, stdout=subprocess.PIPE, text=True)
    try:
        assert _line_until(proc, "VULNERABLE") == "VULNERABLE"
        result = agent("update")  # the test before unloaded level 2: it comes back
        assert (result["outcome"], result["level"]) == ("applied", 2)
        row = next(u for u in result["userspace"] if u.get("soname") == "libc.so.6")
        assert (row["level"], row["applied"], row["cves"]) == (1, True, ["CVE-2026-5928"])
        assert _line_until(proc, "FIXED") == "FIXED"
        shown = status()
        assert enabled(shown) == ["suture_cmdline_l2"] and cmdline() == "L2:" + original
        user = next(u for u in shown["userspace"] if u["library"] == "libc.so.6")
        assert user["level"] == 1 and proc.pid in next(iter(user["patched"].values()))
        # The server took the check-in, format 3: the kernel's level and, beside it, the
        # libc build's row (partial when some process, PID 1 say, is refused).
        host = hosts()[0]
        assert host["level"] == 2
        lib = next(u for u in host["userspace"] if u["soname"] == "libc.so.6")
        assert (lib["level"], lib["cves"]) == (1, ["CVE-2026-5928"])
        assert lib["processes"]["patched"] >= 1 and lib["state"] in ("patched", "partial")
    finally:
        proc.kill()
        proc.wait()
        suture("unload", "glibc_ungetwc_cve_2026_5928")


def test_refusals_keep_the_live_level(server: subprocess.Popen[bytes], original: str) -> None:
    assert agent("update")["level"] == 2  # the test before unloaded it: the agent re-applies
    # Level 3 whose published file is then altered on the server (a tampered mirror).
    with bundle.opened(level_bundle(2)) as (manifest, ko):
        forged = WORK / "suture_cmdline_l3.bundle"
        bundle.write(forged, replace(manifest, level=3), ko.read_bytes())
    publish(forged)
    for target in (REPO / "targets").rglob("*suture_cmdline_l2-L3.bundle"):
        data = bytearray(target.read_bytes())
        data[len(data) // 3] ^= 0xFF  # inside the module: a tar ends in zero padding
        target.write_bytes(bytes(data))
    failed = agent("update", expect=72)
    assert failed["error"] == "integrity", failed
    assert cmdline() == "L2:" + original
    assert enabled(status()) == ["suture_cmdline_l2"]
    assert status()["exit"] == 4  # the last check failed: status says so
    assert hosts()[0]["state"] == "failed"

    # The server goes down: the agent retries, gives up, and the live level stays.
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)
    failed = agent("update", expect=71)
    assert failed["error"] == "fetch"
    assert cmdline() == "L2:" + original
    # The publisher withdraws the bad level.
    build_id = status()["kernel"]["build_id"]
    yank = ("repo", "yank", "--repo", str(REPO), "--kernel", os.uname().release)
    suture(*yank, "--build-id", build_id, "--level", "3")


def test_boot_reapply_and_crash_guard(original: str) -> None:
    # A reboot drops live patches; `suture boot` applies the cached level without a server.
    assert cmdline() == original
    booted = agent("boot")
    assert (booted["outcome"], booted["level"]) == ("reapplied", 2)
    assert cmdline() == "L2:" + original
    assert agent("boot")["outcome"] == "live"

    # Now the boot that applied it "ended early": it was never confirmed, and no
    # daemon recorded a clean stop. The guard holds the level.
    path = STATE / "state.json"
    data = json.loads(path.read_text())
    data["applied"].update(boot_id="00000000-0000-0000-0000-000000000000", confirmed=False)
    data["clean_shutdown_boot"] = ""
    path.write_text(json.dumps(data))
    suture("unload", "--all")
    held = agent("boot", expect=4)
    assert held["outcome"] == "held" and "probation" in held["reason"]
    assert cmdline() == original
    assert enabled(status()) == []


def test_daemon_cycles_notifies_systemd_and_stops_cleanly(original: str) -> None:
    proc = start_server()
    try:
        assert agent("update", expect=4)["outcome"] == "held"  # still held, even by hand
        assert agent("update", "--clear-hold")["outcome"] == "applied"
        assert cmdline() == "L2:" + original
        sock_path = WORK / "notify.sock"
        sock_path.unlink(missing_ok=True)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(sock_path))
            sock.settimeout(60)
            env = {**os.environ, "NOTIFY_SOCKET": str(sock_path)}
            daemon = subprocess.Popen(
                [*SUTURE, "daemon", "--config", str(CONFIG)], env=env, stderr=subprocess.PIPE
            )
            assert sock.recv(4096) == b"READY=1"
            status_line = sock.recv(4096).decode()
            assert status_line.startswith("STATUS=up-to-date: level 2 live"), status_line
            daemon.send_signal(signal.SIGTERM)
            _, err = daemon.communicate(timeout=60)
            assert daemon.returncode == 0, err
            assert sock.recv(4096) == b"STOPPING=1"
        state = json.loads((STATE / "state.json").read_text())
        assert state["clean_shutdown_boot"] == guard.boot_id()
        assert hosts()[0]["state"] == "patched"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
