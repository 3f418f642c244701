"""Check-ins per second the server takes, and their latency, at several concurrencies.

Prints one JSON document. Starts the real server (`suture serve`, SQLite in a
temp folder unless --db) as a child process, then for each concurrency and
connection mode runs a load generator in another child process: N simulated
agents, each with its own host_id, POSTing valid no-change check-ins
(state "patched", the same level every time) to /api/v1/checkin for
--duration seconds, each agent waiting for its answer before the next.
Each agent enrols first, as a real one does (POST /api/v1/register with a
registration key the orchestrator makes through the admin API), and sends
its host token with every check-in; enrolment is not measured.

    .venv/bin/python bench/checkin.py [--duration 5] [--concurrency 1,8,32]
                                      [--connection both] [--db postgresql://...]

Connection modes:
keep-alive: one connection per agent for the whole phase (the server's upper bound).
new: a new connection per check-in, closed after the answer: what the real
    agent does (report.send makes a PoolManager per cycle and clears it),
    so each check-in also costs the server a thread and a TCP handshake.

The load generator is asyncio over raw sockets with prepared requests, in its
own process so its CPU is apart from the server's; both share the machine's
cores. Server CPU is read from /proc/<pid>/stat around each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving import ServeProcess, fs_type, machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, as bench/fleet.py
from tests import fleet_sim

GOAL_RATE = 300.0  # check-ins/s
GOAL_P99_MS = 50.0
REQUEST_TIMEOUT = 30.0  # s; a check-in slower than this counts as an error
WARMUP = 0.5  # s of load before each phase's measurement (rows exist, threads warm)
AGENT_VERSION = "0.1.0"
KEY_ENV = "SUTURE_BENCH_REGISTRATION_KEY"  # to the load generator (not on its command line)


# --- the load generator (child process) ----------------------------------------


@dataclass
class Tally:
    """What the simulated agents saw during the measured window."""

    latencies: list[float] = field(default_factory=list)  # s, successful check-ins
    errors: Counter[str] = field(default_factory=Counter)


def host_id(agent: int) -> str:
    """Simulated agent ``agent``'s host id."""
    return f"bench-agent-{agent:05d}"


def request(host: str, port: int, path: str, body: bytes, token: str = "") -> bytes:
    """A POST of a JSON ``body``, with a bearer token if given."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"User-Agent: suture-bench/{AGENT_VERSION}\r\n\r\n"
    )
    return head.encode() + body


def checkin_request(host: str, port: int, agent: int, token: str) -> bytes:
    """A POST of a valid format-1 no-change check-in from simulated agent ``agent``."""
    body = json.dumps({
        "format": 1,
        "host_id": host_id(agent),
        "hostname": f"bench-{agent:05d}.example.net",
        "kernel": {"release": "6.1.0-56-amd64",
                   "build_id": "0123456789abcdef0123456789abcdef01234567"},
        "level": 1,
        "state": "patched",
        "agent_version": AGENT_VERSION,
        "patches": ["suture_bench_fix"],
    }).encode()  # fmt: skip
    return request(host, port, "/api/v1/checkin", body, token)


async def enrol(target: tuple[str, int], agent: int, key: str) -> str:
    """Register simulated agent ``agent`` with the registration key; its host token."""
    body = json.dumps({"registration_key": key, "host_id": host_id(agent)}).encode()
    reader, writer = await asyncio.open_connection(*target)
    try:
        writer.write(request(*target, "/api/v1/register", body))
        status, length = await _head(reader)
        answer = json.loads(await reader.readexactly(length))
    finally:
        writer.close()
    if status != 200:
        raise SystemExit(f"agent {agent} could not enrol: {status} {answer}")
    token: str = answer["host_token"]
    return token


async def _head(reader: asyncio.StreamReader) -> tuple[int, int]:
    """The status line and headers of an answer: (status, Content-Length)."""
    status = int((await reader.readline()).split(b" ", 2)[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, length


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes) -> tuple[int, bool]:  # fmt: skip
    """Send one request, read the whole answer; its status and whether the server closes."""
    writer.write(request)
    status, _, closing = await fleet_sim.read_answer(reader)
    return status, closing


async def _agent(agent: int, target: tuple[str, int], keep_alive: bool, window: tuple[float, float],
                 tally: Tally, *, token: str) -> None:  # fmt: skip
    request = checkin_request(*target, agent, token)
    measure_from, deadline = window
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while (start := time.perf_counter()) < deadline:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                if conn is None:
                    conn = await asyncio.open_connection(*target)
                status, closing = await _exchange(*conn, request)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            if start >= measure_from:
                tally.errors[type(e).__name__] += 1
            if conn is not None:
                conn[1].close()
            conn = None
            continue
        if start >= measure_from:
            if status == 200:
                tally.latencies.append(time.perf_counter() - start)
            else:
                tally.errors[f"http-{status}"] += 1
        if closing or not keep_alive:
            conn[1].close()
            conn = None
    if conn is not None:
        conn[1].close()


async def _load(target: tuple[str, int], concurrency: int, keep_alive: bool,
                duration: float) -> dict[str, Any]:  # fmt: skip
    tally = Tally()
    key = os.environ[KEY_ENV]
    tokens = await asyncio.gather(*(enrol(target, i, key) for i in range(concurrency)))
    measure_from = time.perf_counter() + WARMUP
    window = (measure_from, measure_from + duration)
    await asyncio.gather(*(
        _agent(i, target, keep_alive, window, tally, token=tokens[i]) for i in range(concurrency)
    ))  # fmt: skip
    # Check-ins started in the window finish after it: rate over the time they took.
    elapsed = time.perf_counter() - measure_from
    lat = sorted(tally.latencies)
    # quantiles() needs two points; one check-in is its own every percentile.
    cuts = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
    return {
        "checkins": len(lat),
        "elapsed_s": round(elapsed, 3),
        "checkins_per_s": round(len(lat) / elapsed, 1),
        "p50_ms": round(cuts[49] * 1000, 2) if lat else None,
        "p99_ms": round(cuts[98] * 1000, 2) if lat else None,
        "max_ms": round(lat[-1] * 1000, 2) if lat else None,
        "errors": sum(tally.errors.values()),
        "error_kinds": dict(tally.errors),
    }


def client_main(args: argparse.Namespace) -> None:
    """The load generator's process: one phase, its tally as JSON on stdout."""
    host, port = args.client.removeprefix("http://").rsplit(":", 1)
    keep_alive = args.connection == "keep-alive"
    result = asyncio.run(_load((host, int(port)), int(args.concurrency), keep_alive, args.duration))
    print(json.dumps(result))


# --- the orchestrator ------------------------------------------------------------


def _phase(server: ServeProcess, concurrency: int, mode: str, duration: float,
           key: str) -> dict[str, Any]:  # fmt: skip
    argv = [sys.executable, str(Path(__file__).resolve()), "--client", server.url,
            "--concurrency", str(concurrency), "--connection", mode,
            "--duration", str(duration)]  # fmt: skip
    cpu_before = server.cpu_seconds()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env={**os.environ, KEY_ENV: key})
    try:
        assert proc.stdout is not None  # noqa: S101 - stdout=PIPE
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # the load generator's own CPU
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"the load generator failed with {proc.returncode}")
    server_cpu = server.cpu_seconds() - cpu_before
    result = json.loads(out)
    count = result["checkins"] + result["errors"]
    return {
        "concurrency": concurrency,
        "connection": mode,
        **result,
        # Includes the warm-up's check-ins, which are not counted: an upper bound.
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_ms_per_checkin": round(server_cpu * 1000 / count, 2) if count else None,
        "client_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "meets_goal": bool(
            result["checkins_per_s"] >= GOAL_RATE
            and result["p99_ms"] is not None
            and result["p99_ms"] < GOAL_P99_MS
            and result["errors"] == 0
        ),
    }


def _admin(url: str, path: str, token: str, body: object = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data)  # noqa: S310 - loopback
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
        return json.load(r)


def _hosts_recorded(url: str, token: str) -> int:
    hosts = _admin(url, "/api/v1/hosts", token)["hosts"]
    return sum(1 for h in hosts if h["host_id"].startswith("bench-agent-"))


def orchestrate(args: argparse.Namespace) -> None:
    """Start the server, run every phase, print the JSON."""
    from suture.repo import create  # the client process does without it

    levels = [int(n) for n in args.concurrency.split(",")]
    modes = ["keep-alive", "new"] if args.connection == "both" else [args.connection]
    tmp = Path(tempfile.mkdtemp(prefix="suture-bench-checkin-"))
    server: ServeProcess | None = None
    phases = []
    try:
        create.init(tmp / "repo")  # the server serves a repository; check-ins do not touch it
        db = args.db or f"sqlite:///{tmp}/server.db"
        server = ServeProcess(tmp / "repo", db, tmp / "server.log", tmp / "admin-token")
        token = (tmp / "admin-token").read_text().strip()
        key = _admin(server.url, "/api/v1/registration-keys", token, {"note": "bench"})
        for n in levels:
            for mode in modes:
                print(f"{n} agents, {mode}", file=sys.stderr, flush=True)
                phases.append(_phase(server, n, mode, args.duration, key["registration_key"]))
        recorded = _hosts_recorded(server.url, token)
        server_rss = server.peak_rss_mib()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({
        "format": 1,
        "bench": "server-checkin",
        "machine": machine(),
        "db": "sqlite" if args.db is None else args.db.split(":", 1)[0],
        "db_fs": fs_type(tmp.parent) if args.db is None else None,
        "duration_s": args.duration,
        "goal": f">= {GOAL_RATE:g} no-change check-ins/s at p99 < {GOAL_P99_MS:g} ms, no errors",
        "results": phases,
        "goal_met_by": [f"{p['concurrency']}/{p['connection']}" for p in phases
                        if p["meets_goal"]],
        "hosts_recorded": recorded,
        "server_peak_rss_mib": server_rss,
    }, indent=2))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Check-ins/s and latency of `suture serve` (JSON on stdout)."
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per phase (5)")
    parser.add_argument(
        "--concurrency", default="1,8,32", help="simulated agents per phase, comma-separated"
    )
    parser.add_argument(
        "--connection",
        choices=("keep-alive", "new", "both"),
        default="both",
        help="one connection per agent, a new one per check-in, or both (both)",
    )
    parser.add_argument(
        "--db", metavar="URL", help="postgresql://... (default: SQLite in a temp folder)"
    )
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return
    # SIGTERM unwinds like Ctrl-C, so the server is stopped and the folder removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    orchestrate(args)


if __name__ == "__main__":
    main()
