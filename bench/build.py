"""Wall time of `suture build` for a one-function fix, warm and cold, and the disk it needs.

Prints one JSON document. warm: the source tree of the build is prepared
already (the normal case on a build host). cold: an empty cache, so the
kernel packages and the source are fetched and prepared first (kallsyms of
the build comes from a guest boot). Disk: the cache folder after the cold run.

    .venv/bin/python bench/build.py [--kernel 6.1.0-47-amd64] [--runs 3] [--skip-cold]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernel", default="6.1.0-47-amd64")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-cold", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fix = Path(tmp) / "fix.patch"
        fix.write_text(FIX)
        env = dict(os.environ)
        run_build(args.kernel, fix, Path(tmp) / "w0", env)  # make sure the tree is warm
        warm = [run_build(args.kernel, fix, Path(tmp) / f"w{i}", env) for i in range(args.runs)]
        result: dict[str, object] = {
            "format": 1,
            "bench": "build",
            "kernel": args.kernel,
            "goal": "warm <= 20 s, cold <= 180 s, disk <= 3 GB",
            "warm_s": {"median": round(statistics.median(warm), 2), "min": round(min(warm), 2)},
        }
        if not args.skip_cold:
            cache = Path(tmp) / "cache"
            cold_env = {**env, "SUTURE_CACHE": str(cache)}
            result["cold_s"] = round(run_build(args.kernel, fix, Path(tmp) / "c", cold_env), 1)
            result["disk_bytes"] = du(cache)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
