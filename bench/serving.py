"""Shared by bench/update.py and bench/checkin.py: a real `suture serve` as a child process.

The server runs as its own process so that its CPU time is its own (read
from /proc/<pid>/stat), apart from the agents or the load generator.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SUTURE = Path(sys.executable).with_name("suture")
START_TIMEOUT = 30.0  # s for the server to print its URL
STOP_TIMEOUT = 10.0  # s after SIGTERM before SIGKILL


class ServeProcess:
    """`suture serve --repo REPO --listen 127.0.0.1:0 --db DB`, its log in ``log``.

    With ``admin_token_file``, the fleet API takes the token in it (made when missing).
    """

    def __init__(
        self, repo: Path, db: str, log: Path, admin_token_file: Path | None = None
    ) -> None:
        self.log = log
        argv = [str(SUTURE), "serve", "--repo", str(repo), "--listen", "127.0.0.1:0", "--db", db]
        if admin_token_file is not None:
            argv += ["--admin-token-file", str(admin_token_file)]
        # The log is a file, not a pipe: the server writes a line per request,
        # and a pipe nobody drains would stall it.
        with log.open("wb") as f:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f)
        try:
            self.url = self._wait_for_url()
        except BaseException:
            self.stop()
            raise

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"suture serve exited: {self.log.read_text()[-2000:]}")
            for line in self.log.read_text().splitlines():
                # "suture: serving /tmp/.../repo on http://127.0.0.1:41234"
                if " serving " in line and " on http" in line:
                    url = line.rsplit(" on ", 1)[1].strip()
                    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:  # noqa: S310
                        r.read()
                    return url
            time.sleep(0.05)
        raise RuntimeError(f"suture serve printed no URL within {START_TIMEOUT:g} s")

    @property
    def host_port(self) -> tuple[str, int]:
        """The bound address."""
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    def cpu_seconds(self) -> float:
        """User + system time of the server process (all its threads) so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # After "(comm)": state is field 3, so utime (14) and stime (15) sit at 11 and 12.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float:
        """VmHWM: the server's peak resident set so far."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
        return 0.0

    def stop(self) -> None:
        """SIGTERM (the server's clean stop), SIGKILL if it hangs."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def fs_type(path: Path) -> str:
    """The file system ``path`` is on (from /proc/mounts): SQLite's fsync costs depend on it."""
    best, kind = "", "?"
    target = str(path.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, fstype, *_ = line.split()
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best):
            best, kind = mount, fstype
    return kind


def machine() -> dict[str, object]:
    """What the numbers were measured on; the load average says how busy it was."""
    return {
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
    }
