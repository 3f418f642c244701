"""Apply latency of the test live patch: Suture's engine against a raw insmod + transition wait.

Run on the host: builds the one-function test patch (cmdline_proc_show)
against the kernel's headers, boots the lab guest and runs this same file
inside with --inside, which prints one JSON document. Variants interleave in
one guest boot, so noise hits them alike.

    .venv/bin/python bench/apply.py [--runs 10] [--kernel RELEASE]

raw: `insmod` (kmod) then a tight poll of sysfs `transition`, `rmmod` after.
engine: suture.kernel.engine.apply (pre-flight + finit_module + transition wait).
cli: `suture apply` as a process: Python start-up, imports, engine, output.

With 2 vCPUs the core's first try usually fails (the other CPU's idle task
cannot be checked while it runs) and the next try comes a second later
(klp_transition_work); --cpus 1 shows the single-try cost.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = "suture_test_v1"
TRANSITION = Path(f"/sys/kernel/livepatch/{NAME}/transition")


def _summary(samples: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(samples) * 1000, 1),
        "min_ms": round(min(samples) * 1000, 1),
        "runs": len(samples),
    }


def _raw(ko: Path) -> float:
    start = time.monotonic()
    subprocess.run(["insmod", str(ko)], check=True)
    while TRANSITION.read_text().strip() != "0":
        pass
    return time.monotonic() - start


def _engine(ko: Path) -> float:
    from suture.kernel import engine

    start = time.monotonic()
    engine.apply(ko)
    return time.monotonic() - start


def _cli(ko: Path) -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "suture.cli.main", "apply", str(ko)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return time.monotonic() - start


def inside(ko: Path, runs: int) -> None:
    from suture.kernel import engine

    variants = {"raw-insmod": _raw, "engine": _engine, "suture-apply-cli": _cli}
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(runs):
        for name, fn in variants.items():
            samples[name].append(fn(ko))
            engine.unload(NAME)
    raw = statistics.median(samples["raw-insmod"])
    print(json.dumps({
        "format": 1,
        "bench": "apply-latency",
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
        "goal": "engine <= 2x raw; suture apply CLI <= 1.5 s",
        "results": {k: _summary(v) for k, v in samples.items()},
        "engine_over_raw": round(statistics.median(samples["engine"]) / raw, 2),
    }, indent=2))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--kernel")
    parser.add_argument("--cpus", type=int, default=2, help="guest vCPUs (2)")
    parser.add_argument("--inside", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(args.inside, args.runs)
        return
    sys.path.insert(0, str(ROOT))
    from suture.lab import guest
    from suture.packages import kernels
    from tests import kmod

    tree = kernels.fetch(args.kernel)
    with tempfile.TemporaryDirectory() as tmp:
        ko = kmod.build(tree, Path(tmp), (NAME,))[NAME]
        argv = [sys.executable, str(Path(__file__).resolve()), "--inside", str(ko),
                "--runs", str(args.runs)]  # fmt: skip
        cfg = guest.GuestConfig(timeout=600, cpus=args.cpus)
        result = guest.run(tree, argv, cfg, cwd=ROOT)
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
