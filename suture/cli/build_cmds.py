"""``suture build``: a source fix in, a live patch bundle for one kernel build out."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from suture.cli.helptext import command
from suture.cli.output import Output
from suture.errors import UsageError

EXIT_SOME_FAILED = 42  # several builds: some failed (the table says which); as ``release``


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    """Add ``build``."""
    p = command(
        subs,
        "build",
        common,
        summary="build a live patch bundle from a source fix",
        description="Port the fix to the build's exact Debian source, compile the files it "
        "touches before and after, diff the objects function by function, carry the changed "
        "code into a livepatch module (klp relocations, x86 special sections, each replaced "
        "function's expected old bytes for the pre-match check), and write NAME.bundle. "
        "Several builds are built side by side, one folder each.",
        examples=[
            ("suture build fix.patch --cve CVE-2026-1234", "for the running distribution's "
             "current build"),
            ("suture build series.mbox --kernels debian12 -o out/", "every Debian 12 build"),
        ],
        exits=(0, 3, 20, 40, 42),
    )  # fmt: skip
    p.add_argument(
        "fix",
        type=Path,
        help="the fix: a unified diff, or git format-patch/mbox output of one or more commits "
        "(applied in order); ported to the build's exact source first",
    )
    p.add_argument(
        "--kernel",
        action="append",
        default=[],
        metavar="RELEASE",
        help="target build (default: current); repeat it for several, built side by side",
    )
    p.add_argument(
        "--kernels",
        action="append",
        default=[],
        metavar="SET",
        help="a named set of builds, resolved from the archive (debian12)",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path(),
        metavar="DIR",
        help="folder for the bundle (several builds: one subfolder per build)",
    )
    p.add_argument(
        "--package",
        default="",
        metavar="SRC[=VERSION]",
        help="a userspace patch of this Debian source package's library (glibc, openssl), "
        "for the installed version unless VERSION is given",
    )
    p.add_argument("--name", default="", help="module name (default: from the fix's name)")
    p.add_argument(
        "--cve",
        action="append",
        default=[],
        metavar="ID",
        help="CVE fixed (default: the CVE ids the fix's subjects and commit texts name)",
    )
    p.add_argument(
        "--description", default="", help="what the fix does (default: its commits' subjects)"
    )
    p.add_argument("--level", type=int, default=1, metavar="N", help="cumulative patch level (1)")
    p.add_argument(
        "--complete",
        action="store_true",
        help="refuse the fix if any way into changed code without an ftrace entry "
        "(a pointer, an export, a caller that cannot be patched) would keep the old code",
    )
    p.set_defaults(handler=cmd_build)


def cmd_build(args: argparse.Namespace, out: Output) -> int:
    """Build one bundle, or one per build side by side (exit 42 when some build failed)."""
    if not args.fix.is_file():
        raise UsageError(
            f"{args.fix} is not a file", hint="give the path of a .patch or .mbox file"
        )
    if args.level < 1:
        raise UsageError("--level must be 1 or more")
    if args.package:
        return _build_userspace(args, out)
    if args.kernels or len(args.kernel) > 1:
        return _build_several(args, out)
    return _build_one(args, out)


def _build_userspace(args: argparse.Namespace, out: Output) -> int:
    from suture.userspace.build import pipeline

    if args.kernel or args.kernels:
        raise UsageError("--package builds a userspace patch: give no --kernel")
    result = pipeline.build(
        args.fix, args.package, output=args.output, name=args.name, cves=tuple(args.cve),
        level=args.level, log=out.message,
    )  # fmt: skip
    m = result.manifest
    text = (
        f"built {result.bundle}: {m.package} {m.version}, {m.release} {m.build_id}\n"
        + "\n".join(f"  {f.name} at {f.offset:#x} ({f.size} bytes, rebuilt original matches "
                     "the shipped code)" for f in m.userspace_functions)
    )  # fmt: skip
    out.result({"format": 1, **result.to_dict()}, text)
    return 0


def _build_several(args: argparse.Namespace, out: Output) -> int:
    from suture.factory.release import build_many, table
    from suture.packages import sets

    releases = sets.resolve_kernels(args.kernel, args.kernels)
    out.message(f"building {args.fix} for {len(releases)} build(s), side by side")
    options = {"name": args.name, "description": args.description, "level": args.level,
               "complete": args.complete}  # fmt: skip
    report = build_many(args.fix, releases, args.output, options, cves=tuple(args.cve))
    out.result(report.to_dict(), table(report, published=False))
    return 0 if report.ok else EXIT_SOME_FAILED


def _build_one(args: argparse.Namespace, out: Output) -> int:
    from suture.builder.pipeline import BuildRequest, build
    from suture.lab.kallsyms import GuestKallsyms

    report = build(
        BuildRequest(
            release=args.kernel[0] if args.kernel else None,
            fix=args.fix,
            out_dir=args.output,
            name=args.name,
            cves=tuple(args.cve),
            description=args.description,
            level=args.level,
            complete=args.complete,
        ),
        GuestKallsyms(),
    )
    funcs = ", ".join(f for fs in report.objects.values() for f in fs)
    text = f"built {report.bundle} for {report.release}: {funcs}"
    if report.port and report.port.get("outcome") == "moved":
        text += f"\nported with moved hunks, read them: {report.port.get('detail')}"
    if report.unpatched:
        text += (
            f"\npartial fix: {len(report.unpatched)} ways into the carried code keep the old "
            'code (listed above and in the manifest\'s "unpatched"); --complete refuses that'
        )
    out.result({"ok": True, **report.to_dict()}, text)
    return 0
