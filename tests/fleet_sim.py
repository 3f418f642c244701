"""A simulated fleet against a real server: ground truth, agents, the server (no tests here).

Shared by tests/test_fleet_scale.py and bench/fleet.py. The fleet is random
but seeded: each host has a kernel build and channel (one of
:data:`KERNELS`), a level, a state (failed and unsupported included), and
the tags of the registration key it enrols with. Agents are asyncio tasks
over raw HTTP/1.1 streams with keep-alive, at most ``concurrency`` at once:
each host registers (registration key -> host token), then reports
(check-in format 2) and keeps the directive it is answered with.

Raw streams rather than an HTTP client library: the protocol used is tiny
(requests with Content-Length; the server always answers with one), it adds
no dependency, and it costs the load generator far less CPU per request, which
matters when it shares two cores with the server it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suture import bundle
from suture.bundle import Manifest
from suture.repo import create, publish
from tests.support.repo import module_bytes

ADMIN_TOKEN = "sat_fleet-simulation-admin-token"  # noqa: S105 - a test server's token
AGENT_VERSION = "0.1.0"
PATCH_NAME = "fleet_fix"
REQUEST_TIMEOUT = 30.0  # s; slower than this is an error


@dataclass(frozen=True)
class Kernel:
    """One kernel build on one channel and the levels published for it.

    ``fixes[i]`` lists the CVEs that level ``i + 1`` adds; levels are cumulative,
    so a host at level L is fixed for every CVE of levels 1 to L.
    """

    release: str
    build_id: str
    channel: str
    fixes: tuple[tuple[str, ...], ...]

    @property
    def newest(self) -> int | None:
        """The newest level (None: none published)."""
        return len(self.fixes) or None

    def fixed_by(self, cve: str) -> int | None:
        """The first level that fixes ``cve``, or None."""
        return next((i + 1 for i, cves in enumerate(self.fixes) if cve in cves), None)


BUILD_A = "a1" * 20
BUILD_B = "b2" * 20
BUILD_C = "c3" * 20
KERNELS = (
    Kernel(
        "6.1.0-56-amd64",
        BUILD_A,
        "stable",
        (("CVE-2026-0001",), ("CVE-2026-0002", "CVE-2026-0003"), ("CVE-2026-0004",)),
    ),
    Kernel(
        "6.1.0-56-amd64",
        BUILD_A,
        "testing",
        (
            ("CVE-2026-0001",),
            ("CVE-2026-0002", "CVE-2026-0003"),
            ("CVE-2026-0004",),
            ("CVE-2026-0005",),
        ),
    ),
    Kernel("6.1.0-55-amd64", BUILD_B, "stable", (("CVE-2026-0001", "CVE-2026-0002"),)),
    Kernel("6.1.0-54-amd64", BUILD_C, "stable", ()),  # an old build nobody patches
)
KERNEL_WEIGHTS = (50, 10, 30, 10)
CVES = ("CVE-2026-0001", "CVE-2026-0002", "CVE-2026-0003", "CVE-2026-0004", "CVE-2026-0005")

# registration key name -> the tags of the hosts enrolled with it
KEYS: dict[str, tuple[str, ...]] = {
    "prod": ("env:prod", "dc:par"),
    "canary": ("env:prod", "ring:0"),
    "dev": ("env:dev",),
}
KEY_WEIGHTS = (70, 10, 20)

# Rollout policies set before the fleet reports. Automatic halts are off: with
# them, the first few failures seen (an accident of ordering) would change the
# directives of the hosts after them. Dev hosts on testing stay at level 1.
NO_HALT = {"min_attempts": 1_000_000}
POLICIES: dict[str, dict[str, Any]] = {
    "stable": NO_HALT,
    "testing": {**NO_HALT, "sticky": {"env:dev": 1}},
}
STICKY = POLICIES["testing"]["sticky"]


@dataclass(frozen=True)
class SimHost:
    """One simulated host: what it will report, and the key it enrols with."""

    host_id: str
    kernel: Kernel
    key: str
    level: int
    state: str
    attempted_level: int

    @property
    def tags(self) -> tuple[str, ...]:
        """The tags the server gives it (from its registration key)."""
        return KEYS[self.key]

    def checkin(self, host_id: str | None = None) -> dict[str, Any]:
        """Its check-in (format 2); ``host_id`` overrides who it claims to be."""
        k = self.kernel
        failed = self.state == "failed"
        return {
            "format": 2,
            "host_id": host_id or self.host_id,
            "hostname": f"{self.host_id}.fleet.example",
            "kernel": {"release": k.release, "build_id": k.build_id},
            "level": self.level,
            "state": self.state,
            "last_error": f"level {self.attempted_level}: transition timed out" if failed else None,
            "agent_version": AGENT_VERSION,
            "patches": [f"{PATCH_NAME}_l{self.level}"] if self.level else [],
            "channel": k.channel,
            "uptime": 3600 + len(self.host_id),
            "functions": ["vmlinux:cmdline_proc_show"] if self.level else [],
            "attempted_level": self.attempted_level,
        }

    def directive(self) -> int | None:
        """The ``max_level`` the server must answer with under :data:`POLICIES`."""
        newest = self.kernel.newest
        if newest is None:
            return None
        sticky = STICKY if self.kernel.channel == "testing" else {}
        return min([newest] + [sticky[t] for t in self.tags if t in sticky])

    def exposed_to(self, cve: str) -> bool:
        """True when a published level fixes ``cve`` for its build and it does not run it yet."""
        first = self.kernel.fixed_by(cve)
        return first is not None and self.level < first


def fleet(count: int, seed: int) -> list[SimHost]:
    """``count`` hosts, the same for the same seed."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible fleet, not a secret
    hosts = []
    for i in range(count):
        (kernel,) = rng.choices(KERNELS, KERNEL_WEIGHTS)
        (key,) = rng.choices(list(KEYS), KEY_WEIGHTS)
        newest = kernel.newest or 0
        roll = rng.random()
        if roll < 0.05:
            state, level, attempted = "unsupported", 0, 0
        elif not newest or roll < 0.20:
            state, level, attempted = "unpatched", 0, 0
        elif roll < 0.30:
            level = rng.randrange(newest)
            state, attempted = "failed", rng.randint(level + 1, newest)
        else:
            level = rng.randint(1, newest)
            state, attempted = "patched", level
        hosts.append(SimHost(f"sim-{seed}-{i:05d}", kernel, key, level, state, attempted))
    return hosts


# --- the repository -------------------------------------------------------------------


def make_repo(repo: Path) -> None:
    """A repository with every level of :data:`KERNELS` published (fake modules)."""
    create.init(repo)
    built = repo.parent / "built"
    built.mkdir(exist_ok=True)
    for k in KERNELS:
        for level, cves in enumerate(k.fixes, start=1):
            module = module_bytes(PATCH_NAME, k.release, k.build_id, note=f"{k.channel} L{level}")
            manifest = Manifest(
                name=PATCH_NAME,
                release=k.release,
                build_id=k.build_id,
                level=level,
                module_file=f"{PATCH_NAME}.ko",
                module_sha256=hashlib.sha256(module).hexdigest(),
                module_size=len(module),
                cves=cves,
            )
            path = built / f"{k.build_id[:8]}-{k.channel}-L{level}.bundle"
            bundle.write(path, manifest, module)
            # Fake modules cannot be tested in a guest: signed in as not tested.
            publish.publish(repo, path, k.channel, untested=True)


# --- the server -----------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """A running `suture serve`."""

    url: str
    pid: int
    log: Path


@contextlib.contextmanager
def serve(
    repo: Path,
    db: str,
    folder: Path,
    start_timeout: float = 30.0,
    *,
    extra: Sequence[str] = (),
    listen: str = "127.0.0.1:0",
) -> Iterator[Served]:
    """`suture serve` on a free loopback port as a child process, with :data:`ADMIN_TOKEN`.

    ``extra``: more options for `suture serve` (``--workers 2``, ``--config FILE``...).

    A child process, not a thread: the server's threads then do not compete
    with the simulated agents for one interpreter lock.
    """
    token_file = folder / "admin-token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    token_file.chmod(0o600)
    log = folder / "server.log"
    argv = [sys.executable, "-m", "suture.cli.main", "serve", "--repo", str(repo),
            "--listen", listen, "--db", db,
            "--admin-token-file", str(token_file), *extra]  # fmt: skip
    # A file, not a pipe: the server logs a line per request and a full pipe would stall it.
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        yield Served(_wait_for_url(proc, log, start_timeout), proc.pid, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_url(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"suture serve exited: {log.read_text()[-2000:]}")
        for line in log.read_text().splitlines():
            if " serving " in line and " on http" in line:  # "suture: serving R on http://..."
                return line.rsplit(" on ", 1)[1].strip()
        time.sleep(0.05)
    raise RuntimeError(f"suture serve printed no URL within {timeout:g} s")


# --- HTTP over raw asyncio streams ----------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection; reopened when the server closes it."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(
        self, method: str, path: str, data: Any = None, token: str = ""
    ) -> tuple[int, Any]:
        """Send one request (``data`` as JSON) and read the answer: (status, decoded JSON)."""
        body = b"" if data is None else json.dumps(data).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if data is not None or method in ("POST", "PUT"):
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        async with asyncio.timeout(REQUEST_TIMEOUT):
            if self._streams is None:
                self._streams = await asyncio.open_connection(self.host, self.port)
            reader, writer = self._streams
            try:
                writer.write(head.encode() + b"\r\n" + body)
                status, payload, closing = await read_answer(reader)
            except BaseException:
                self.close()
                raise
        if closing:
            self.close()
        return status, json.loads(payload) if payload else None

    def close(self) -> None:
        """Close the connection (the next request opens another)."""
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """One HTTP/1.1 answer off a kept-alive stream: status, body, whether the server closes."""
    status = int((await reader.readline()).split(b" ", 2)[1])
    length, closing = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            closing = value.strip().lower() == b"close"
    return status, await reader.readexactly(length), closing


# --- the fleet's run ------------------------------------------------------------------


@dataclass
class Outcome:
    """What the simulated agents saw."""

    tokens: dict[str, str] = field(default_factory=dict)  # host id -> host token
    directives: dict[str, dict[str, Any]] = field(default_factory=dict)  # host id -> directive
    latencies: dict[str, list[float]] = field(default_factory=dict)  # "register" etc -> s
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: dict[str, float] = field(default_factory=dict)  # phase -> s

    def stats(self, phase: str) -> dict[str, Any]:
        """Count, rate, p50, p99 and max of one phase's requests."""
        lat = sorted(self.latencies.get(phase, []))
        took = self.elapsed.get(phase, 0.0)
        return {
            "requests": len(lat),
            "elapsed_s": round(took, 3),
            "per_s": round(len(lat) / took, 1) if took else None,
            "p50_ms": round(_quantile(lat, 0.50) * 1000, 2) if lat else None,
            "p99_ms": round(_quantile(lat, 0.99) * 1000, 2) if lat else None,
            "max_ms": round(lat[-1] * 1000, 2) if lat else None,
        }


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def admin_setup(url: str) -> dict[str, str]:
    """Registration keys for :data:`KEYS` and the rollout :data:`POLICIES`; key name -> secret."""
    conn = Connection(url)
    try:
        secrets = {}
        for name, tags in KEYS.items():
            status, answer = await conn.request(
                "POST", "/api/v1/registration-keys", {"tags": list(tags), "note": name}, ADMIN_TOKEN
            )
            if status != 200:
                raise RuntimeError(f"creating registration key {name}: {status} {answer}")
            secrets[name] = answer["registration_key"]
        for channel, policy in POLICIES.items():
            status, answer = await conn.request(
                "PUT", f"/api/v1/rollouts/{channel}", policy, ADMIN_TOKEN
            )
            if status != 200:
                raise RuntimeError(f"setting the {channel} rollout policy: {status} {answer}")
        return secrets
    finally:
        conn.close()


async def _workers(
    url: str, concurrency: int, hosts: list[SimHost], job: Any, *, outcome: Outcome, phase: str
) -> None:
    queue: asyncio.Queue[SimHost] = asyncio.Queue()
    for h in hosts:
        queue.put_nowait(h)
    latencies = outcome.latencies.setdefault(phase, [])

    async def worker() -> None:
        conn = Connection(url)
        try:
            while not queue.empty():
                host = queue.get_nowait()
                start = time.perf_counter()
                try:
                    ok = await job(conn, host)
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
                    outcome.errors[f"{phase}: {type(e).__name__}"] += 1
                    continue
                if ok:
                    latencies.append(time.perf_counter() - start)
        finally:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(hosts)))))
    # Side by side parts of one phase (several servers): the phase took the longest of them.
    outcome.elapsed[phase] = max(outcome.elapsed.get(phase, 0.0), time.perf_counter() - start)


async def enrol(
    url: str, hosts: list[SimHost], secrets: dict[str, str], concurrency: int, outcome: Outcome
) -> None:
    """Register every host with its key's secret; tokens go into ``outcome.tokens``."""

    async def job(conn: Connection, host: SimHost) -> bool:
        status, answer = await conn.request(
            "POST",
            "/api/v1/register",
            {"registration_key": secrets[host.key], "host_id": host.host_id},
        )
        if status != 200:
            outcome.errors[f"register: http {status}"] += 1
            return False
        outcome.tokens[host.host_id] = answer["host_token"]
        return True

    await _workers(url, concurrency, hosts, job, outcome=outcome, phase="register")


async def report(
    url: str, hosts: list[SimHost], concurrency: int, outcome: Outcome, phase: str = "checkin"
) -> None:
    """One check-in per enrolled host; directives go into ``outcome.directives``."""

    async def job(conn: Connection, host: SimHost) -> bool:
        token = outcome.tokens.get(host.host_id)
        if token is None:
            return False  # not enrolled (already counted as an error)
        status, answer = await conn.request("POST", "/api/v1/checkin", host.checkin(), token)
        if status != 200:
            outcome.errors[f"{phase}: http {status}"] += 1
            return False
        outcome.directives[host.host_id] = answer["directive"]
        return True

    await _workers(url, concurrency, hosts, job, outcome=outcome, phase=phase)


async def simulate(
    url: str | list[str],
    hosts: list[SimHost],
    concurrency: int,
    rounds: int = 1,
    limit: float = 300.0,
) -> Outcome:
    """Set up keys and policies, enrol every host, then ``rounds`` check-ins per host.

    With several server URLs (several server processes on one database), the
    hosts are shared out among them, and each host reports to another server
    than the one it enrolled with: nothing may depend on which process
    answers.

    Raises:
        TimeoutError: it took longer than ``limit`` seconds.
    """
    urls = [url] if isinstance(url, str) else url
    outcome = Outcome()
    share = max(1, concurrency // len(urls))

    async def each(work: Any) -> None:
        await asyncio.gather(*(work(i, u) for i, u in enumerate(urls)))

    async with asyncio.timeout(limit):
        secrets = await admin_setup(urls[0])
        parts = [hosts[i :: len(urls)] for i in range(len(urls))]
        await each(lambda i, u: enrol(u, parts[i], secrets, share, outcome))
        for n in range(rounds):
            phase = "checkin" if n == 0 else f"checkin-{n}"
            await each(
                lambda i, u, phase=phase: report(
                    urls[(i + 1) % len(urls)], parts[i], share, outcome, phase
                )
            )
    return outcome


def cpu_seconds(pid: int) -> float:
    """User + system time of a process so far (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
