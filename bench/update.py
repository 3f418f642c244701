"""Cost of a no-change `suture update`: CPU time, peak RSS and wall time of the process.

Prints one JSON document. Sets up a real repository (`suture repo init`, one
published level), serves it with `suture serve` in a child process, and runs
the agent against it on a fake kernel (bench/fake_host.py: this machine has
no livepatch core) whose release and build id match the level, with the
patch enabled in its fake /sys/kernel/livepatch. A first run applies the level
(through a no-op engine) so the agent's state records it; every measured run
then finds it live and up to date, as a host does on most cycles.

    .venv/bin/python bench/update.py [--runs 20]

Each variant is a child process: user + system CPU from wait4(2), peak RSS
from GNU time (see measure), wall time from spawn to exit. Variants interleave, so the
machine's noise hits them alike:

python-floor: `python -c pass`, the interpreter's own start-up (the venv's site).
update-imports: importing what `suture update` imports, doing nothing.
suture-version, suture-uname: the CLI's cheapest commands (uname on this host).
suture-update: the no-change cycle: the repository's timestamp compared with
    the one verified last time (suture.agent.quick; the TUF client is loaded
    only when it changed), the state read and written, and the check-in
    POSTed to the server (part of every cycle's cost).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving import SUTURE, ServeProcess, fs_type, machine

from suture import bundle
from suture.bundle import Manifest
from suture.repo import create, publish

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/support, whatever the venv's install mode
from tests.support.repo import module_bytes  # noqa: E402

RELEASE = "6.1.0-56-amd64"
BUILD_ID = "0123456789abcdef0123456789abcdef01234567"
NAME = "suture_bench_fix"
GOAL_CPU_MS = 150.0
GNU_TIME = Path("/usr/bin/time")
# The server's log line per request: ... "GET /metadata/timestamp.json HTTP/1.1" 200 -
REQUEST_LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/[0-9.]+" ([0-9]{3})')
GOAL_RSS_MIB = 40.0


@dataclass(frozen=True)
class Sample:
    """One child process, as wait4(2) saw it."""

    cpu_s: float  # user + system
    rss_mib: float  # peak resident set, MiB
    wall_s: float


@dataclass(frozen=True)
class Setup:
    """The repository, the fake kernel and the agent's state folder under one temp folder."""

    tmp: Path
    repo: Path
    sysroot: Path
    state: Path
    registration_key: str = ""


def _note(name: bytes, ntype: int, desc: bytes) -> bytes:
    """One ELF note, as /sys/kernel/notes holds the kernel's GNU build id."""
    name0 = name + b"\0"
    return (
        struct.pack("<III", len(name0), len(desc), ntype)
        + name0.ljust((len(name0) + 3) & ~3, b"\0")
        + desc.ljust((len(desc) + 3) & ~3, b"\0")
    )


def fake_sysroot(root: Path) -> Path:
    """The files suture.kernel.identity and .livepatch read, with NAME enabled."""
    files = {
        "proc/sys/kernel/osrelease": RELEASE + "\n",
        "proc/sys/kernel/tainted": "0\n",
        "proc/sys/kernel/random/boot_id": "5b1c7e0e-0000-4000-8000-000000000001\n",
        "sys/kernel/security/lockdown": "[none] integrity confidentiality\n",
        "sys/module/module/parameters/sig_enforce": "N\n",
        f"sys/kernel/livepatch/{NAME}/enabled": "1\n",
        f"sys/kernel/livepatch/{NAME}/transition": "0\n",
        f"sys/kernel/livepatch/{NAME}/replace": "1\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "sys/kernel/notes").write_bytes(_note(b"GNU", 3, bytes.fromhex(BUILD_ID)))
    return root


def published_repo(repo: Path, work: Path) -> Path:
    """`suture repo init` and `suture publish` of level 1 for RELEASE/BUILD_ID.

    The module is a stand-in (tests/support/repo.py): publish checks its
    ELF header and ``.modinfo``; the fake engine never loads it.
    """
    create.init(repo)
    module = module_bytes(NAME, RELEASE, BUILD_ID, note="L1")
    manifest = Manifest(
        name=NAME,
        release=RELEASE,
        build_id=BUILD_ID,
        level=1,
        module_file=f"{NAME}.ko",
        module_sha256=hashlib.sha256(module).hexdigest(),
        module_size=len(module),
        cves=("CVE-2026-1001",),
    )
    path = work / f"{NAME}-L1.bundle"
    bundle.write(path, manifest, module)
    # A fake module cannot be tested in a guest: signed in as not tested.
    publish.publish(repo, path, untested=True)
    return repo


def measure(argv: list[str], env: dict[str, str], out: Path) -> tuple[Sample, int]:
    """Run ``argv`` to its end, stdout into ``out``; its rusage and exit status.

    Linux carries the spawning process's peak RSS over exec (exec_mmap:
    setmax_mm_hiwater_rss), so a child of this process, which has the
    repository code loaded, could never show less than this process's RSS.
    GNU time forks the child from its own small process and reports the
    child's peak alone; the CPU comes from wait4(2) on time, which adds its
    children's to its own (well under 1 ms).
    """
    rss_file = out.with_suffix(".rss")
    if GNU_TIME.exists():
        argv = [str(GNU_TIME), "-f", "%M", "-o", str(rss_file), *argv]
    with out.open("wb") as f:
        start = time.perf_counter()
        # A process group of its own, so an interrupted run can kill time's child too.
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=f,
                                stderr=subprocess.DEVNULL, process_group=0)  # fmt: skip
        try:
            # wait4 rather than Popen.wait: it hands back the child's rusage.
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss_kib = int(rss_file.read_text().split()[-1]) if GNU_TIME.exists() else usage.ru_maxrss
    return Sample(usage.ru_utime + usage.ru_stime, rss_kib / 1024, wall), proc.returncode


def _update(setup: Setup, url: str, env: dict[str, str], out: Path) -> tuple[Sample, str]:
    argv = [sys.executable, str(HERE / "fake_host.py"), "update", "--server", url,
            "--trusted-root", str(setup.repo / "metadata/1.root.json"),
            "--state-dir", str(setup.state), "--json"]  # fmt: skip
    if setup.registration_key:  # enrolled hosts check in (and get the fleet's directive)
        argv += ["--registration-key", setup.registration_key]
    sample, code = measure(argv, env, out)
    try:
        outcome = json.loads(out.read_text()).get("outcome", "")
    except json.JSONDecodeError:
        outcome = ""
    if code != 0 or not outcome:
        raise SystemExit(f"suture update failed ({code}): {out.read_text()[-2000:]}")
    return sample, outcome


def _registration_key(url: str, token_file: Path) -> str:
    """A key from the fleet API, so the measured agent enrols and checks in as a real one."""
    from suture.fleet.client import FleetClient

    answer = FleetClient(url, token_file.read_text().strip()).call(
        "POST", "/api/v1/registration-keys", {"tags": ["bench"]}
    )
    key: str = answer["registration_key"]
    return key


def _summary(samples: list[Sample]) -> dict[str, Any]:
    def stats(values: list[float], scale: float, digits: int) -> dict[str, float]:
        return {
            "median": round(statistics.median(values) * scale, digits),
            "max": round(max(values) * scale, digits),
        }

    return {
        "cpu_ms": stats([s.cpu_s for s in samples], 1000, 1),
        "peak_rss_mib": stats([s.rss_mib for s in samples], 1, 1),
        "wall_ms": stats([s.wall_s for s in samples], 1000, 1),
        "runs": len(samples),
    }


def _agent_env(setup: Setup) -> dict[str, str]:
    # No SUTURE_* from the caller's shell, and a config file that does not
    # exist: the command line alone configures the agent.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUTURE_")}
    env["SUTURE_AGENT_CONFIG"] = str(setup.tmp / "agent.toml")
    env["SUTURE_BENCH_SYSROOT"] = str(setup.sysroot)
    return env


def bench(setup: Setup, server: ServeProcess, runs: int) -> dict[str, Any]:
    """Apply once, warm up, then the interleaved measured runs."""
    env = _agent_env(setup)
    out = setup.tmp / "out.json"
    _, first = _update(setup, server.url, {**env, "SUTURE_BENCH_FAKE_APPLY": "1"}, out)
    if first != "applied":
        raise SystemExit(f"the first update should apply level 1; it said {first!r}")
    _update(setup, server.url, env, out)  # warm: page cache, .pyc files, TUF's local metadata
    floor_imports = "import suture.cli.main, suture.agent.cycle, suture.agent.report"
    others = {
        "python-floor": [sys.executable, "-c", "pass"],
        "update-imports": [sys.executable, "-c", floor_imports],
        "suture-version": [str(SUTURE), "--version"],
        "suture-uname": [str(SUTURE), "uname", "--json", "--state-dir", str(setup.state)],
    }
    samples: dict[str, list[Sample]] = {k: [] for k in [*others, "suture-update"]}
    log_lines = len(server.log.read_text().splitlines())
    server_cpu = server.cpu_seconds()
    for i in range(runs):
        print(f"run {i + 1}/{runs}", file=sys.stderr, flush=True)
        for name, argv in others.items():
            samples[name].append(measure(argv, env, out)[0])
        sample, outcome = _update(setup, server.url, env, out)
        if outcome != "up-to-date":
            raise SystemExit(f"a no-change run said {outcome!r}, not 'up-to-date'")
        samples["suture-update"].append(sample)
    requests = Counter(
        " ".join(m.groups())
        for line in server.log.read_text().splitlines()[log_lines:]
        if (m := REQUEST_LINE.search(line))
    )
    results = {k: _summary(v) for k, v in samples.items()}
    update = results["suture-update"]
    return {
        "results": results,
        "goals_met": {
            "cpu_median": update["cpu_ms"]["median"] <= GOAL_CPU_MS,
            "cpu_max": update["cpu_ms"]["max"] <= GOAL_CPU_MS,
            "rss_median": update["peak_rss_mib"]["median"] <= GOAL_RSS_MIB,
            "rss_max": update["peak_rss_mib"]["max"] <= GOAL_RSS_MIB,
        },
        "update_over_floor_cpu_ms": round(
            update["cpu_ms"]["median"] - results["python-floor"]["cpu_ms"]["median"], 1
        ),
        "server_per_update": {
            "requests": {k: round(n / runs, 2) for k, n in sorted(requests.items())},
            "cpu_ms": round((server.cpu_seconds() - server_cpu) / runs * 1000, 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description="CPU, peak RSS and wall time of a no-change `suture update` (JSON on stdout)."
    )
    parser.add_argument("--runs", type=int, default=20, help="measured runs per variant (20)")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the finally below stops the server and removes the folder.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    tmp = Path(tempfile.mkdtemp(prefix="suture-bench-update-"))
    server: ServeProcess | None = None
    try:
        setup = Setup(tmp, tmp / "repo", fake_sysroot(tmp / "root"), tmp / "state")
        print("making the repository", file=sys.stderr, flush=True)
        published_repo(setup.repo, tmp)
        token = tmp / "admin.token"
        server = ServeProcess(setup.repo, f"sqlite:///{tmp}/server.db", tmp / "server.log", token)
        setup = dataclasses.replace(setup, registration_key=_registration_key(server.url, token))
        measured = bench(setup, server, args.runs)
        server_rss = server.peak_rss_mib()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({
        "format": 1,
        "bench": "agent-update-no-change",
        "machine": machine(),
        "db_fs": fs_type(tmp.parent),
        "rss_source": "GNU time %M" if GNU_TIME.exists() else "wait4 (includes this process's RSS)",
        "goal": f"suture update (no change): <= {GOAL_CPU_MS:g} ms CPU, "
                f"<= {GOAL_RSS_MIB:g} MiB peak RSS",
        **measured,
        "server_peak_rss_mib": server_rss,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
