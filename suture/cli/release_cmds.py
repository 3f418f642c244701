"""``suture release``: fixes ported, built, tested and published for every build asked for."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from suture.cli.helptext import command
from suture.cli.output import Output
from suture.errors import UsageError

EXIT_SOME_FAILED = 42


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    """Add ``release``."""
    p = command(
        subs,
        "release",
        common,
        summary="port, build, test and publish fixes for every kernel build asked for",
        description="Each build gets a new cumulative level: every fix already released for "
        "it on the channel plus the new ones, built together, tested in a guest of that "
        "build, and published. Run again with the same inputs, it skips the work done.",
        examples=[
            ("suture release fix.mbox --kernels debian12 --repo /srv/repo --test check.sh", ""),
        ],
        exits=(0, 20, 42, 60),
    )
    p.add_argument("fixes", nargs="+", type=Path, metavar="FIX",
                   help="a unified diff or git format-patch/mbox series")  # fmt: skip
    p.add_argument("--kernel", action="append", default=[], metavar="RELEASE",
                   help="a kernel build (repeatable)")  # fmt: skip
    p.add_argument("--kernels", action="append", default=[], metavar="SET",
                   help="a named set of builds, resolved from the archive: debian12")  # fmt: skip
    p.add_argument(
        "--repo", type=Path, required=True, metavar="DIR", help="the repository to publish into"
    )
    p.add_argument("--channel", default="stable", help="stable (default) or testing")
    p.add_argument("--cve", action="append", default=[], metavar="ID",
                   help="a CVE the new fixes fix (added to those their commits name)")  # fmt: skip
    p.add_argument("--test", type=Path, metavar="SCRIPT",
                   help="the fix's test: fails before the patch, passes with it")  # fmt: skip
    p.add_argument(
        "--jobs", type=int, default=0, metavar="N", help="builds side by side (default: the cores)"
    )
    p.set_defaults(handler=cmd_release)


def cmd_release(args: argparse.Namespace, out: Output) -> int:
    """Run the release; exit 42 when some build failed (the table says which)."""
    from suture.factory.release import ReleaseRequest, release, table
    from suture.packages import sets
    from suture.repo.layout import CHANNELS

    if not args.kernel and not args.kernels:
        raise UsageError("name the builds: --kernel RELEASE or --kernels SET (e.g. debian12)")
    if args.channel not in CHANNELS:
        raise UsageError(f"--channel must be one of {', '.join(CHANNELS)}")
    if args.jobs < 0:
        raise UsageError("--jobs must be 0 (one per core) or more")
    for fix in args.fixes:
        if not fix.is_file():
            raise UsageError(f"{fix} is not a file", hint="give fix files (diff or mbox)")
    if args.test is not None and not args.test.is_file():
        raise UsageError(f"{args.test} is not a file", hint="give an executable test script")
    releases = sets.resolve_kernels(args.kernel, args.kernels)
    out.message(f"releasing {len(args.fixes)} fix(es) for {len(releases)} build(s)")
    report = release(
        ReleaseRequest(
            fixes=tuple(args.fixes), releases=tuple(releases), repo=args.repo,
            channel=args.channel, cves=tuple(args.cve), test_script=args.test, jobs=args.jobs,
        )
    )  # fmt: skip
    out.result(report.to_dict(), table(report))
    return 0 if report.ok else EXIT_SOME_FAILED
