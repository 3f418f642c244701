"""The agent from the Debian package, in a clean Debian 12 root, on the real kernel.

The root is made by tests/test_guest_package.py (mmdebstrap, then dpkg -i of
suture-agent). The repository and the fleet server run from this checkout
on the guest's loopback; the agent runs from the root through chroot, with
Debian's Python and the package's own libraries, and with /proc, /sys and
/dev bound in as a host's.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.inguest import IN_GUEST, SUTURE

DEBROOT = Path(os.environ.get("SUTURE_TEST_DEBROOT", "/nonexistent"))
BUNDLES = Path(os.environ.get("SUTURE_TEST_BUNDLES", "/nonexistent"))
PORT = 18470


def sh(
    *argv: str | Path, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=False, timeout=timeout
    )
    if check:
        assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def packaged(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The packaged /usr/bin/suture, run in the clean root."""
    return sh("chroot", DEBROOT, "/usr/bin/suture", *args, check=check)


@pytest.fixture(scope="module")
def host() -> Iterator[str]:
    """The root mounted as a host's, a repository with level 1, the server on loopback."""
    if IN_GUEST and not (DEBROOT / "usr/bin/suture").exists():
        pytest.fail(f"SUTURE_TEST_DEBROOT={DEBROOT} holds no installed package: harness broken")
    for sub in ("proc", "sys", "dev"):
        sh("mount", "--rbind", f"/{sub}", DEBROOT / sub)
    for sub in ("tmp", "var/lib/suture", "run"):
        (DEBROOT / sub).mkdir(parents=True, exist_ok=True)
        sh("mount", "-t", "tmpfs", "tmpfs", DEBROOT / sub)
    work = Path("/tmp/suture-package-test")
    work.mkdir(exist_ok=True)
    [bundle] = BUNDLES.glob("*.bundle")
    sh(*SUTURE, "repo", "init", work / "repo")
    sh(*SUTURE, "publish", bundle, "--repo", work / "repo", "--untested")
    server = subprocess.Popen(
        [*SUTURE, "serve", "--repo", str(work / "repo"), "--listen", f"127.0.0.1:{PORT}",
         "--db", f"sqlite:///{work}/s.db", "--admin-token-file", str(work / "admin.token")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(600):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", PORT)) == 0:
                    break
            time.sleep(0.1)
        url = f"http://127.0.0.1:{PORT}"
        fleet = ["--server", url, "--admin-token-file", str(work / "admin.token")]
        key = json.loads(sh(*SUTURE, "--json", "fleet", "key", "create", *fleet).stdout)
        (DEBROOT / "etc/suture/root.json").write_bytes(
            (work / "repo/metadata/1.root.json").read_bytes()
        )
        (DEBROOT / "etc/suture/agent.toml").write_text(
            f'format = 1\nserver = "{url}"\ntrusted_root = "/etc/suture/root.json"\n'
            f'registration_key = "{key["registration_key"]}"\nhost_id = "deb-host"\n'
            "check_interval = 3600\ncheck_jitter = 0\n"
        )
        yield url
    finally:
        server.terminate()
        server.wait(30)
        sh(*SUTURE, "unload", "--all", check=False)
        for sub in ("run", "var/lib/suture", "tmp", "dev", "sys", "proc"):
            sh("umount", "-R", DEBROOT / sub, check=False)


def test_the_packaged_agent_applies_reports_and_cycles(host: str) -> None:
    original = Path("/proc/cmdline").read_text()
    done = packaged("--json", "update", "--now")
    result = json.loads(done.stdout)
    assert (result["outcome"], result["level"]) == ("applied", 1), done.stderr
    assert Path("/proc/cmdline").read_text() == "deb:" + original
    status = json.loads(packaged("--json", "status", check=False).stdout)
    assert (status["agent"]["level"], status["agent"]["patch"]) == (1, "suture_deb_cmdline")
    # The daemon, as suture-agent.service runs it: a cycle, then SIGTERM ends it cleanly.
    daemon = subprocess.Popen(
        ["chroot", str(DEBROOT), "/usr/bin/suture", "daemon"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert daemon.stderr is not None
    watchdog = threading.Timer(300, daemon.terminate)  # a cycle that never says up-to-date
    watchdog.start()
    seen = []
    for line in daemon.stderr:  # chroot execs suture: the signal reaches the daemon itself
        seen.append(line)
        if "up-to-date: level 1 live" in line:
            daemon.terminate()
    watchdog.cancel()
    assert daemon.wait(120) == 0, "".join(seen)
    assert "agent stopped" in "".join(seen)
    fleet = ["--server", host, "--admin-token-file", "/tmp/suture-package-test/admin.token"]
    [row] = json.loads(sh(*SUTURE, "--json", "fleet", "hosts", *fleet).stdout)["hosts"]
    assert (row["host_id"], row["level"], row["state"]) == ("deb-host", 1, "patched")
    assert packaged("uname", "-r").stdout.strip().endswith("+suture.L1")
