"""The patch factory end to end: one fix to every build of a set, tested in guests, published.

Runs ``suture release FIX --kernels SET --test SCRIPT`` into a new repository
twice: cold (an empty cache: every kernel, source and tree fetched and
prepared, every build's kallsyms read in a guest) and warm (the same cache,
a new repository: every level built, tested in its own guest and published
again). Then times a header fix (a static inline that many units use) on
the newest build, first and second time. Prints one JSON document.

    .venv/bin/python bench/factory.py [--kernels debian12] [--fix F --test S]
        [--header-fix H] [--skip-cold] [--cache DIR]

Goals (issue 10): warm <= 15 min and cold <= 45 min for >= 10 builds on
2 cores; a header fix reaching ~50 units <= 2 min warm; <= 1 GB of disk per
additional build of an already cached source.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUTURE = [str(ROOT / ".venv" / "bin" / "python"), "-m", "suture.cli.main"]
FIX = ROOT / "examples" / "sockmap-max-entries.patch"
TEST = ROOT / "examples" / "sockmap-max-entries.test.sh"
HEADER_FIX = ROOT / "examples" / "seq-show-option.patch"
ROW_FIELDS = ("release", "status", "stage", "reason", "level", "tested", "moved", "seconds")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def disk(path: Path) -> int:
    """Bytes under ``path``, hard links counted once (du)."""
    out = subprocess.run(
        ["du", "-s", "-B1", str(path)], capture_output=True, text=True, check=False
    )
    return int(out.stdout.split()[0]) if out.stdout else 0


def timed(argv: list[str], env: dict[str, str], log: Path) -> tuple[float, float, str, int]:
    """Run ``argv``: wall and CPU seconds, its stdout, its exit status; stderr goes to ``log``."""
    cpu, start = children_cpu(), time.monotonic()
    with log.open("a") as err:
        proc = subprocess.run(
            argv, env=env, stdout=subprocess.PIPE, stderr=err, text=True, check=False
        )
    return time.monotonic() - start, children_cpu() - cpu, proc.stdout, proc.returncode


def release_run(name: str, args: argparse.Namespace, cache: Path, work: Path) -> dict[str, object]:
    env = {**os.environ, "SUTURE_CACHE": str(cache)}
    repo = work / f"repo-{name}"
    subprocess.run([*SUTURE, "repo", "init", str(repo)], env=env, capture_output=True, check=True)
    argv = [*SUTURE, "--json", "release", str(args.fix), "--kernels", args.kernels,
            "--repo", str(repo), "--test", str(args.test)]  # fmt: skip
    print(f"bench: {name} release ({' '.join(argv[3:])})", file=sys.stderr)
    wall, cpu, out, status = timed(argv, env, work / f"{name}.log")
    try:
        report = json.loads(out)
    except ValueError:
        report = {"builds": [], "error": out[-2000:]}
    builds = report.get("builds", [])
    return {
        "run": name,
        "exit": status,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "cache_bytes": disk(cache),
        "builds": len(builds),
        "outcomes": dict(Counter(b["status"] for b in builds)),
        "tested_in_guest": sum(1 for b in builds if b.get("tested")),
        "rows": [{k: b.get(k) for k in ROW_FIELDS} for b in builds],
        "log": str(work / f"{name}.log"),
    }


def header_run(args: argparse.Namespace, cache: Path, work: Path) -> dict[str, object]:
    env = {**os.environ, "SUTURE_CACHE": str(cache)}
    newest = subprocess.run(
        [*SUTURE, "--json", "lab", "list", "--kernels", args.kernels], env=env,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    builds = [b for b in json.loads(newest.stdout)["builds"] if b.get("source")]
    release = builds[-1]["release"]
    runs = []
    for attempt in ("first", "second"):
        argv = [*SUTURE, "--json", "build", str(args.header_fix), "--kernel", release,
                "-o", str(work / f"header-{attempt}")]  # fmt: skip
        wall, cpu, out, status = timed(argv, env, work / "header.log")
        report = json.loads(out) if out.strip().startswith("{") else {}
        runs.append({
            "attempt": attempt, "exit": status, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "objects": len(report.get("objects", {})),
            "functions": sum(len(v) for v in report.get("objects", {}).values()),
        })  # fmt: skip
    return {"release": release, "fix": str(args.header_fix), "runs": runs, "goal_s": 120}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", default="debian12")
    parser.add_argument("--fix", type=Path, default=FIX)
    parser.add_argument("--test", type=Path, default=TEST)
    parser.add_argument("--header-fix", type=Path, default=HEADER_FIX)
    parser.add_argument("--skip-cold", action="store_true", help="use the cache there is")
    parser.add_argument("--cache", type=Path, help="the cache (default: new, or SUTURE_CACHE)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="suture-bench-factory-"))
    if args.cache:
        cache = args.cache
    elif args.skip_cold:
        cache = Path(os.environ.get("SUTURE_CACHE", Path.home() / ".cache" / "suture"))
    else:
        cache = work / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    runs = []
    if not args.skip_cold:
        runs.append(release_run("cold", args, cache, work))
    runs.append(release_run("warm", args, cache, work))
    result = {
        "format": 1,
        "bench": "factory",
        "cores": os.cpu_count(),
        "kernels": args.kernels,
        "fix": str(args.fix),
        "releases": runs,
        "header_fix": header_run(args, cache, work),
        "goals": {"warm_s": 15 * 60, "cold_s": 45 * 60, "builds": 10, "header_s": 120},
        "work": str(work),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
