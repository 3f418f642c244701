"""The agent end to end on another userland: run inside a lab guest booted with ``--root``.

tests/test_guest_series.py boots the Debian 13 root with a 6.12 build and runs
this file with the root's own Python (``-I``, so that tests/support/http.py
does not hide the standard library's). It uses the standard library and the
``suture`` the root's wheel installed (first on PATH), never this checkout's
package: the point is the userland a Debian 13 host gives the agent.

$SUTURE_TEST_BUNDLES holds suture_cmdline_l1 and suture_cmdline_l2, built on
the host for the guest's kernel build ("L1:" and "L2:" before /proc/cmdline).
Here: a repository and the server on the guest's loopback, then the agent:
enrol, update to level 1, replace it by level 2, the boot re-apply after the
patch is gone, and unload. Each step prints a line; the first wrong one
exits 1 with what was seen.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

BUNDLES = Path(os.environ.get("SUTURE_TEST_BUNDLES", "/nonexistent"))
WORK = Path("/tmp/agent-e2e")
REPO, STATE, CONFIG, TOKEN = WORK / "repo", WORK / "state", WORK / "agent.toml", WORK / "admin"
PORT = 8470
SERVER = f"http://127.0.0.1:{PORT}"


def check(ok: bool, what: str, seen: object = "") -> None:
    print(f"{'ok' if ok else 'FAILED'}: {what}", flush=True)
    if not ok:
        print(f"seen: {seen}", flush=True)
        sys.exit(1)


def suture(*args: str, expect: int = 0) -> str:
    proc = subprocess.run(["suture", *args], capture_output=True, text=True, check=False)
    check(
        proc.returncode == expect,
        f"suture {' '.join(args[:2])} exits {expect}",
        f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}",
    )
    return proc.stdout


def agent(*args: str, expect: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(
        suture(*args, "--config", str(CONFIG), "--json", expect=expect)
    )
    return out


def cmdline() -> str:
    return Path("/proc/cmdline").read_text().strip()


def hosts() -> list[dict[str, Any]]:
    request = urllib.request.Request(f"{SERVER}/api/v1/hosts")  # noqa: S310 - loopback
    request.add_header("Authorization", f"Bearer {TOKEN.read_text().strip()}")
    with urllib.request.urlopen(request, timeout=5) as r:  # noqa: S310
        found: list[dict[str, Any]] = json.load(r)["hosts"]
        return found


def serve() -> subprocess.Popen[bytes]:
    argv = ["suture", "serve", "--repo", str(REPO), "--listen", f"127.0.0.1:{PORT}"]
    argv += ["--admin-token-file", str(TOKEN), "--db", f"sqlite:///{WORK}/server.db"]
    proc = subprocess.Popen(argv)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{SERVER}/healthz", timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    check(False, "suture serve answers /healthz within 120 s")
    raise AssertionError  # not reached


def publish(level: int) -> None:
    # --untested: no nested guest here; tests/test_guest_tester.py tests the gate.
    bundle = BUNDLES / f"suture_cmdline_l{level}.bundle"
    suture("publish", str(bundle), "--repo", str(REPO), "--untested")


def main() -> None:
    release = os.uname().release
    original = cmdline()
    print(f"Python {sys.version.split()[0]}, suture at {shutil.which('suture')}", flush=True)
    WORK.mkdir(parents=True, exist_ok=True)
    suture("repo", "init", str(REPO))
    server = serve()
    try:
        fleet = ("--server", SERVER, "--admin-token-file", str(TOKEN), "--json")
        key = json.loads(suture("fleet", "key", "create", "--tag", "env:lab", *fleet))
        CONFIG.write_text(
            f'server = "{SERVER}"\n'
            f'trusted_root = "{REPO}/metadata/1.root.json"\n'
            f'state_dir = "{STATE}"\n'
            f'registration_key = "{key["registration_key"]}"\n'
            "retries = 2\nretry_backoff = 0.2\ntimeout = 10\n"
        )
        seen = agent("update", expect=1)
        check(seen["outcome"] == "no-patches", "enrolled, nothing published yet", seen)

        publish(1)
        seen = agent("update")
        check((seen["outcome"], seen["level"]) == ("applied", 1), "level 1 applied", seen)
        check(cmdline() == "L1:" + original, "level 1 runs", cmdline())

        publish(2)
        seen = agent("update")
        check(
            (seen["outcome"], seen["previous"], seen["level"]) == ("applied", 1, 2)
            and seen["superseded"] == ["suture_cmdline_l1"],
            "level 2 replaced level 1",
            seen,
        )
        check(cmdline() == "L2:" + original, "level 2 runs", cmdline())
        shown = suture("uname", "-r", "--state-dir", str(STATE)).strip()
        check(shown == f"{release}+suture.L2", "uname shows the level", shown)
        [host] = hosts()
        check(
            (host["level"], host["state"], host["kernel"]["release"]) == (2, "patched", release),
            "the server shows the host at level 2",
            host,
        )

        # A reboot drops live patches: `suture boot` applies the cached level.
        suture("unload", "--all")
        check(cmdline() == original, "the patch is gone", cmdline())
        seen = agent("boot")
        check((seen["outcome"], seen["level"]) == ("reapplied", 2), "boot re-applied level 2", seen)
        check(cmdline() == "L2:" + original, "level 2 runs again", cmdline())

        suture("unload", "--all")
        check(cmdline() == original, "unloaded", cmdline())
        shown = suture("uname", "-r", "--state-dir", str(STATE)).strip()
        check(shown == release, "uname shows no level", shown)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print("agent end to end: all steps passed", flush=True)


if __name__ == "__main__":
    main()
