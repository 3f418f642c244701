"""A 10,000-host fleet against `suture serve`: reports/s and latency, side by side for
SQLite and PostgreSQL, each with 1 and 2 server processes.

Prints one JSON document. For each database and process count the real
server runs as a child process (``--workers N``: N processes on one socket)
on a fresh repository and database; this process is the load generator
(asyncio, raw HTTP/1.1 keep-alive streams: tests/fleet_sim.py). The
simulated fleet is the one tests/test_fleet_scale.py checks (seeded: a mix
of kernel builds, channels, levels, states and registration keys).

Phases, per database:

enrol: every host registers with its key (registration key -> host token).
first-report: every host's first check-in (a new row and a history event).
report: every host again, nothing changed (the steady state of a fleet).
    These three are closed loops: --concurrency agents, each sending its next
    request when the last is answered. They give the server's capacity; their
    latency is mostly queueing.
at-goal-rate: open loop at --rate reports/s (default 830: a 3,000,000-host
    fleet on a 1-hour cadence) for --duration s, over --concurrency
    connections. Latency counts from when each report was due, so a server
    that falls behind shows it (no coordinated omission).

The saturated rate of a setup is its "report" phase (no-change check-ins as
fast as the server answers them). ``table`` puts every setup side by side.

    .venv/bin/python bench/fleet.py [--hosts 10000] [--concurrency 100] [--rate 830]
                                    [--duration 10] [--processes 1,2] [--pg URL | --no-pg]

Without --pg a private PostgreSQL server is started with scripts/postgres.sh
(fsync off, as the tests run it) and removed after; when it cannot start,
the PostgreSQL column says why. CPU seconds are read from /proc for the server
(its worker processes included), and for the private PostgreSQL server's
processes (the database's own work).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from serving import fs_type, machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/fleet_sim.py, whatever the venv's install mode

from tests import fleet_sim  # noqa: E402
from tests.fleet_sim import Connection, Outcome, SimHost  # noqa: E402

GOAL_RATE = 830.0  # reports/s: 3,000,000 hosts, one report an hour each
GOAL_P99_MS = 50.0
SEED = 20261125


# --- the open loop at a fixed rate ------------------------------------------------


async def at_rate(
    url: str,
    hosts: list[SimHost],
    tokens: dict[str, str],
    *,
    rate: float,
    duration: float,
    conns: int,
) -> dict[str, Any]:
    """Reports due every 1/rate s, cycling through the fleet; latency from when each was due."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(conns):
        pool.put_nowait(Connection(url))
    latencies: list[float] = []
    errors: dict[str, int] = {}
    count = int(rate * duration)
    start = time.perf_counter()

    async def one(i: int, due: float) -> None:
        host = hosts[i % len(hosts)]
        conn = await pool.get()
        try:
            status, _ = await conn.request(
                "POST", "/api/v1/checkin", host.checkin(), tokens[host.host_id]
            )
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            return
        finally:
            pool.put_nowait(conn)
        if status == 200:
            latencies.append(time.perf_counter() - due)
        else:
            errors[f"http-{status}"] = errors.get(f"http-{status}", 0) + 1

    tasks = []
    for i in range(count):
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait().close()
    outcome = Outcome(latencies={"r": latencies}, elapsed={"r": elapsed})
    stats = outcome.stats("r")
    return {
        "target_per_s": rate,
        **stats,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "meets_goal": bool(
            stats["p99_ms"] is not None
            and stats["p99_ms"] < GOAL_P99_MS
            and not errors
            and stats["per_s"] >= 0.98 * rate
        ),
    }


# --- one database -------------------------------------------------------------------


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its direct children (PostgreSQL's backends)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(stat.parent.name) == pid or int(fields[1]) == pid:  # fields[1]: ppid
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_backend(
    db: str, args: argparse.Namespace, hosts: list[SimHost], pg_pid: int | None, processes: int
) -> dict[str, Any]:
    """Every phase against a new server on ``db`` with ``processes`` server processes."""
    tmp = Path(tempfile.mkdtemp(prefix="suture-bench-fleet-"))
    try:
        fleet_sim.make_repo(tmp / "repo")
        # No access log: a line per request is the log's cost, not the server's.
        extra = ["--workers", str(processes), "--no-access-log"]
        with fleet_sim.serve(tmp / "repo", db, tmp, extra=extra) as srv:
            return asyncio.run(_phases(srv, args, hosts, pg_pid))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _phases(
    srv: fleet_sim.Served, args: argparse.Namespace, hosts: list[SimHost], pg_pid: int | None
) -> dict[str, Any]:
    outcome = Outcome()
    secrets = await fleet_sim.admin_setup(srv.url)
    phases: dict[str, Any] = {}

    def meter() -> tuple[float, float, float]:
        return (
            _children_cpu(srv.pid),  # the server and its worker processes
            _children_cpu(pg_pid) if pg_pid else 0.0,
            _cpu_self(),
        )

    async def closed(name: str, key: str, work: Any) -> None:
        before = meter()
        await work
        after = meter()
        stats = outcome.stats(key)
        n = stats["requests"] or 1
        phases[name] = {
            **stats,
            "server_cpu_ms_each": round((after[0] - before[0]) * 1000 / n, 2),
            "db_cpu_ms_each": round((after[1] - before[1]) * 1000 / n, 2) if pg_pid else None,
            "client_cpu_ms_each": round((after[2] - before[2]) * 1000 / n, 2),
        }
        print(f"  {name}: {stats['per_s']}/s p99 {stats['p99_ms']} ms", file=sys.stderr)

    c = args.concurrency
    await closed("enrol", "register", fleet_sim.enrol(srv.url, hosts, secrets, c, outcome))
    await closed("first-report", "checkin", fleet_sim.report(srv.url, hosts, c, outcome))
    await closed("report", "again", fleet_sim.report(srv.url, hosts, c, outcome, "again"))
    before = meter()
    goal = await at_rate(
        srv.url, hosts, outcome.tokens, rate=args.rate, duration=args.duration, conns=c
    )
    after = meter()
    n = goal["requests"] or 1
    goal["server_cpu_share"] = round((after[0] - before[0]) / goal["elapsed_s"], 2)
    goal["db_cpu_share"] = round((after[1] - before[1]) / goal["elapsed_s"], 2) if pg_pid else None
    goal["server_cpu_ms_each"] = round((after[0] - before[0]) * 1000 / n, 2)
    print(f"  at {args.rate:g}/s: p50 {goal['p50_ms']} p99 {goal['p99_ms']} ms", file=sys.stderr)
    phases["at-goal-rate"] = goal
    return {"errors": dict(outcome.errors), "phases": phases}


# --- PostgreSQL -----------------------------------------------------------------------


@contextlib.contextmanager
def private_postgres() -> Iterator[tuple[str | None, int | None, str]]:
    """(URL, postmaster pid, note) of a throw-away server from scripts/postgres.sh."""
    # In /tmp: the postgres user must reach it and the socket path must stay short.
    folder = tempfile.mkdtemp(prefix="suture-bench-pg.", dir="/tmp")
    script = str(ROOT / "scripts" / "postgres.sh")
    try:
        started = subprocess.run(
            ["bash", script, "start", folder], capture_output=True, text=True, check=False
        )
        if started.returncode != 0:
            why = started.stderr.strip()[-300:]
            yield None, None, f"scripts/postgres.sh could not start: {why}"
            return
        pid_file = Path(folder) / "data" / "postmaster.pid"
        pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
        yield started.stdout.strip(), pid, "private server (scripts/postgres.sh: fsync off)"
    finally:
        subprocess.run(["bash", script, "stop", folder], capture_output=True, check=False)


def _fresh_database(server: str) -> str:
    """A new database on ``server`` for this run (the tests' pg_url way)."""
    import uuid

    import psycopg
    from psycopg import sql

    name = f"suture_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True, connect_timeout=10) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base, _, query = server.partition("?")
    return base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")


# --- the orchestrator ------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Reports/s and latency of a 10,000-host fleet, SQLite and PostgreSQL (JSON)."
    )
    parser.add_argument("--hosts", type=int, default=10_000, help="simulated hosts (10000)")
    parser.add_argument("--concurrency", type=int, default=100, help="agents/connections (100)")
    parser.add_argument("--rate", type=float, default=GOAL_RATE, help="open-loop reports/s (830)")
    parser.add_argument(
        "--processes", default="1,2", help="server process counts to run, comma-separated (1,2)"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="open-loop seconds (10)")
    parser.add_argument("--pg", metavar="URL", help="a PostgreSQL server (a database is made)")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so servers are stopped and folders removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    hosts = fleet_sim.fleet(args.hosts, SEED)
    counts = [int(n) for n in args.processes.split(",")]
    results: dict[str, Any] = {}
    for n in counts:
        tmp = Path(tempfile.mkdtemp(prefix="suture-bench-fleet-db-"))
        try:
            print(f"sqlite, {n} process(es)", file=sys.stderr)
            results[f"sqlite-{n}"] = {
                "db_fs": fs_type(tmp),
                **run_backend(f"sqlite:///{tmp}/server.db", args, hosts, None, n),
            }
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.no_pg:
        results["postgresql"] = {"skipped": "--no-pg"}
    elif args.pg:
        for n in counts:
            print(f"postgresql, {n} process(es)", file=sys.stderr)
            results[f"postgresql-{n}"] = {
                "server": "given by --pg",
                **run_backend(_fresh_database(args.pg), args, hosts, None, n),
            }
    else:
        with private_postgres() as (url, pid, note):
            for n in counts:
                if url is None:
                    results[f"postgresql-{n}"] = {"skipped": note}
                    continue
                print(f"postgresql, {n} process(es)", file=sys.stderr)
                results[f"postgresql-{n}"] = {
                    "server": note,
                    **run_backend(_fresh_database(url), args, hosts, pid, n),
                }
    print(json.dumps({
        "format": 1,
        "bench": "server-fleet",
        "machine": machine(),
        "hosts": args.hosts,
        "concurrency": args.concurrency,
        "goal": f"{args.rate:g} reports/s ({args.rate * 3600:,.0f} hosts at a 1-hour cadence)"
                f" with p99 < {GOAL_P99_MS:g} ms on 2 cores",
        "table": table(results),
        "results": results,
        "goal_met_by": [setup for setup, r in results.items()
                        if r.get("phases", {}).get("at-goal-rate", {}).get("meets_goal")],
    }, indent=2))  # fmt: skip


def table(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each phase's rate and p99, one column per setup (database-processes)."""
    rows: dict[str, dict[str, Any]] = {}
    for setup, r in results.items():
        for phase, stats in r.get("phases", {}).items():
            rows.setdefault(phase, {})[setup] = f"{stats['per_s']}/s p99 {stats['p99_ms']} ms"
    rows["saturated check-ins/s"] = {
        setup: r["phases"]["report"]["per_s"] for setup, r in results.items() if "phases" in r
    }
    return rows


if __name__ == "__main__":
    main()
