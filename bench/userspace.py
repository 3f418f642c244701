"""Userspace live patches: apply time, pause, call overhead, time until a new process is patched.

Run as root on a host with the Debian glibc and OpenSSL the examples are built
for. It builds examples/userspace/*.patch (cached source trees; give
--glibc/--openssl to use bundles made before), compiles the small programs
of tests/userspace/, and prints one JSON document:

one-process: apply and unload in one idle process, --runs times: the whole
    operation per process (``seconds``), the pause every thread sees (all
    threads stopped, ptrace stop to detach: ``pause_ms``) and the time one
    borrowed thread is held for the injected mmap/mprotect/munmap
    (``inject_ms``; the other threads run on meanwhile).
threads: the same in a process of 65 threads (tests/userspace/threads.c).
many: --procs (100 and 1,000) idle processes, one `fleet.apply` over them
    all with --workers processes, then one unload; wall time and per-process
    pauses.
call-overhead: tests/userspace/bn_bench.c times BN_ucmp (best of 5 rounds of
    --calls calls): the original; once patched, through the library's entry
    (the 5-byte jump, then the new code); and the new code called directly.
    The jump's cost is entry minus direct.
new-process: the agent's re-apply (suture.userspace.watch, the proc
    connector) runs in a thread; idle processes are started one at a time and
    polled until their patch header says live: the time from exec to patched.

    .venv/bin/python bench/userspace.py [--runs 30] [--procs 100,1000] [--workers 2]
        [--calls 2000000] [--new 20] [--glibc BUNDLE] [--openssl BUNDLE]
        [--parts one,threads,many,call,new]

Goals (issue 12): pause <= 5 ms per process, 1,000 processes <= 2 s, no
overhead beyond one jump.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from serving import machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from suture.errors import UserspaceError  # noqa: E402
from suture.userspace import fleet, image, patcher, procfs, watch  # noqa: E402
from suture.userspace import patch as patch_file  # noqa: E402

PROGRAMS = ROOT / "tests" / "userspace"
GOAL_PAUSE_MS = 5.0
GOAL_1000_S = 2.0


def _stats(values: list[float], digits: int = 3) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), digits),
        "p90": round(ordered[int(len(ordered) * 0.9) - 1 if len(ordered) > 1 else 0], digits),
        "max": round(ordered[-1], digits),
        "n": len(ordered),
    }


def _build(fix: str, package: str, out: Path) -> Path:
    r = subprocess.run(
        [sys.executable, "-m", "suture.cli.main", "--json", "build", fix, "--package", package,
         "-o", str(out)], capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return Path(json.loads(r.stdout)["bundle"])


def _compile(tmp: Path) -> dict[str, Path]:
    out = {"sleeper": tmp / "sleeper", "bn_bench": tmp / "bn_bench", "threads": tmp / "threads"}
    subprocess.run(["gcc", "-O2", "-o", out["sleeper"], PROGRAMS / "sleeper.c"], check=True)
    subprocess.run(["gcc", "-O2", "-o", out["threads"], PROGRAMS / "threads.c", "-lpthread"],
                   check=True)  # fmt: skip
    subprocess.run(["gcc", "-O2", "-o", out["bn_bench"], PROGRAMS / "bn_bench.c", "-lcrypto"],
                   check=True)  # fmt: skip
    return out


@contextlib.contextmanager
def _sleepers(program: Path, count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = []
    try:
        for _ in range(count):
            procs.append(subprocess.Popen([str(program)], stdin=subprocess.DEVNULL))
        time.sleep(0.5 + count / 1000)  # every loader done
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def one_process(bundle: Path, sleeper: Path, runs: int) -> dict[str, Any]:
    p = patch_file.load(bundle)
    shared = patcher.Shared()
    rows: dict[str, list[float]] = {k: [] for k in ("seconds_ms", "pause_ms", "inject_ms",
                                                     "unload_pause_ms")}  # fmt: skip
    with _sleepers(sleeper, 1) as (proc,):
        for _ in range(runs):
            o = patcher.apply_in_process(p, proc.pid, shared=shared)
            u = patcher.unload_in_process(p.name, proc.pid, shared=shared)
            assert o.result == "patched" and u.result == "removed", (o, u)  # noqa: S101
            rows["seconds_ms"].append(o.seconds * 1e3)
            rows["pause_ms"].append(o.pause_ms)
            rows["inject_ms"].append(o.inject_ms)
            rows["unload_pause_ms"].append(u.pause_ms)
    return {k: _stats(v) for k, v in rows.items()}


def many(bundle: Path, sleeper: Path, count: int, workers: int) -> dict[str, Any]:
    with _sleepers(sleeper, count) as procs:
        pids = [p.pid for p in procs]
        policy = patcher.Policy()
        applied = fleet.apply(bundle, pids, policy, workers=workers)
        removed = fleet.unload(patch_file.load(bundle).name, pids, policy, workers=workers)
    ok = applied.count("patched")
    pauses = [o.pause_ms for o in applied.outcomes if o.result == "patched"]
    return {
        "processes": count,
        "workers": workers,
        "patched": ok,
        "apply_s": round(applied.seconds, 3),
        "unload_s": round(removed.seconds, 3),
        "pause_ms": _stats(pauses) if pauses else None,
        "other_results": sorted({o.result for o in applied.outcomes} - {"patched"}),
    }


def _jump_target(pid: int, name: str) -> int:
    region = next(a for a in patcher.applied_patches(pid) if a.name == name)
    at, _orig, jump = region.jumps()[0]
    return at + 5 + struct.unpack("<i", jump[1:5])[0]


def call_overhead(bundle: Path, bn_bench: Path, calls: int) -> dict[str, Any]:
    p = patch_file.load(bundle)
    proc = subprocess.Popen([str(bn_bench)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, bufsize=1)  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None  # noqa: S101

    def ask(line: str) -> float:
        proc.stdin.write(line + "\n")  # type: ignore[union-attr]
        return float(proc.stdout.readline())  # type: ignore[union-attr]

    try:
        original = min(ask(f"call {calls}") for _ in range(3))
        outcome = patcher.apply_in_process(p, proc.pid)
        assert outcome.result == "patched", outcome  # noqa: S101
        target = _jump_target(proc.pid, p.name)
        entry, direct = [], []
        for _ in range(15):  # interleaved, so that noise hits both alike; the best of each
            entry.append(ask(f"call {calls}"))
            direct.append(ask(f"direct {target:x} {calls}"))
    finally:
        proc.kill()
        proc.wait()
    return {
        "function": p.functions[0].name,
        "calls_per_round": calls,
        "original_ns": round(original, 3),
        "patched_via_entry_ns": round(min(entry), 3),
        "new_code_direct_ns": round(min(direct), 3),
        "jump_ns": round(min(entry) - min(direct), 3),
    }


def new_process(bundle: Path, sleeper: Path, count: int) -> dict[str, Any]:
    p = patch_file.load(bundle)
    seen: dict[int, float] = {}
    me = str(os.getpid())
    # Only this bench's children: the host's other processes are not the bench's to patch.
    reapplier = watch.Reapplier(
        [p],
        select=lambda pid: procfs.status_field(pid, "PPid") == me,
        report=lambda o, s: seen.__setitem__(o.pid, s) if o.result == "patched" else None,
    )
    stop = threading.Event()
    try:
        events: watch.ExecEvents | None = watch.ExecEvents()
    except UserspaceError:  # not root, or no CONFIG_PROC_EVENTS: the bench says so
        events = None
    thread = threading.Thread(
        target=watch.watch, args=(reapplier, stop.is_set), kwargs={"events": events}, daemon=True
    )
    thread.start()
    polled: list[float] = []
    try:
        for _ in range(count):
            started = time.monotonic()
            proc = subprocess.Popen([str(sleeper)])
            try:
                while time.monotonic() - started < 5:
                    if any(a.state is image.State.LIVE for a in patcher.regions(proc.pid)):
                        polled.append((time.monotonic() - started) * 1e3)
                        break
                    time.sleep(0.0005)
            finally:
                proc.kill()
                proc.wait()
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
        if events is not None:
            events.close()
    return {
        "watch": "proc connector" if events is not None else "/proc scan",
        "started": count,
        "patched": len(polled),
        "spawn_to_live_ms": _stats(polled, 2) if polled else None,
        "exec_event_to_patched_ms": _stats([v * 1e3 for v in seen.values()], 2) if seen else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--procs", default="100,1000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--calls", type=int, default=2_000_000)
    ap.add_argument("--new", type=int, default=20)
    ap.add_argument("--glibc", type=Path)
    ap.add_argument("--openssl", type=Path)
    ap.add_argument("--parts", default="one,threads,many,call,new", help="what to measure (all)")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if os.geteuid() != 0:
        print("bench/userspace.py: run as root (ptrace)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="suture-bench-us-") as tmp_name:
        tmp = Path(tmp_name)
        glibc = args.glibc or _build(
            "examples/userspace/glibc-ungetwc-CVE-2026-5928.patch", "glibc", tmp
        )
        openssl = args.openssl or _build("examples/userspace/openssl-bn-ucmp.patch", "openssl", tmp)
        programs = _compile(tmp)
        result: dict[str, Any] = {
            "format": 1,
            "bench": "userspace",
            "machine": machine(),
            "kernel": os.uname().release,
            "goals": {"pause_ms": GOAL_PAUSE_MS, "processes_1000_s": GOAL_1000_S},
        }
        if "one" in parts:
            result["one_process"] = one_process(glibc, programs["sleeper"], args.runs)
        if "threads" in parts:
            result["one_process_65_threads"] = one_process(glibc, programs["threads"], args.runs)
        if "many" in parts:
            result["many"] = [
                many(glibc, programs["sleeper"], int(n), args.workers)
                for n in args.procs.split(",")
                if n
            ]
        if "call" in parts:
            result["call_overhead"] = call_overhead(openssl, programs["bn_bench"], args.calls)
        if "new" in parts:
            result["new_process"] = new_process(glibc, programs["sleeper"], args.new)
        result["machine_after"] = machine()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
