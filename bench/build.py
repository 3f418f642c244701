"""Wall time of `suture build` for a one-function fix, warm and cold, and the disk it needs.

Prints one JSON document, a row per kernel build, side by side. warm: the
source tree of the build is prepared already (the normal case on a build
host); the runs of the builds alternate, so a busy moment of the machine
falls on all of them. cold: an empty cache, so the kernel packages, the
source (and for 6.12 and 7.x the build root of their compiler) are fetched
and prepared first, and kallsyms of the build comes from a guest boot.
Disk: the cache folder after the cold run.

    .venv/bin/python bench/build.py [--kernel RELEASE]... [--runs 3] [--skip-cold]

Without --kernel: the newest build of each series today (debian12's 6.1,
debian13's 6.12, bookworm-backports' 6.12 built with gcc-12, trixie-backports'
7.x), resolved from the archive.
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

from suture.packages import sets

FIX = "\n".join(
    [
        "--- a/fs/proc/cmdline.c",
        "+++ b/fs/proc/cmdline.c",
        "@@ -6,7 +6,7 @@",
        " ",
        " static int cmdline_proc_show(struct seq_file *m, void *v)",
        " {",
        "-\tseq_puts(m, saved_command_line);",
        '+\tseq_printf(m, "bench %s", saved_command_line);',
        " \tseq_putc(m, '\\n');",
        " \treturn 0;",
        " }",
        "",
    ]
)


def run_build(kernel: str, fix: Path, out: Path, env: dict[str, str]) -> float:
    start = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "suture.cli.main", "build", str(fix), "--kernel", kernel,
         "-o", str(out)],
        check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return time.monotonic() - start


def du(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def newest_builds() -> list[str]:
    series = ("debian12", "debian13", "bookworm-backports", "trixie-backports")
    return [sets.set_releases(name)[-1] for name in series]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernel", action="append", help="a build (repeatable)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-cold", action="store_true")
    args = parser.parse_args()
    kernels = args.kernel or newest_builds()
    with tempfile.TemporaryDirectory() as tmp:
        fix = Path(tmp) / "fix.patch"
        fix.write_text(FIX)
        env = dict(os.environ)
        warm: dict[str, list[float]] = {k: [] for k in kernels}
        for kernel in kernels:
            run_build(kernel, fix, Path(tmp) / f"{kernel}-w", env)  # make sure the tree is warm
        for i in range(args.runs):
            for kernel in kernels:
                warm[kernel].append(run_build(kernel, fix, Path(tmp) / f"{kernel}-{i}", env))
        rows = []
        for kernel in kernels:
            row: dict[str, object] = {
                "kernel": kernel,
                "warm_s": {
                    "median": round(statistics.median(warm[kernel]), 2),
                    "min": round(min(warm[kernel]), 2),
                },
            }
            if not args.skip_cold:
                cache = Path(tmp) / f"cache-{kernel}"
                cold_env = {**env, "SUTURE_CACHE": str(cache)}
                row["cold_s"] = round(
                    run_build(kernel, fix, Path(tmp) / f"{kernel}-c", cold_env), 1
                )
                row["disk_bytes"] = du(cache)
                subprocess.run(["rm", "-rf", str(cache)], check=False)
            rows.append(row)
    result = {
        "format": 2,
        "bench": "build",
        "goal": "warm <= 20 s, cold <= 180 s, disk <= 3 GB",
        "runs": args.runs,
        "builds": rows,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
