"""``suture lab``: Debian kernels for development and CI: list, fetch, run under QEMU, cache."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from suture import timefmt
from suture.cli.helptext import command, group
from suture.cli.output import Output
from suture.errors import UsageError

# The lab's modules are imported inside the handlers: `suture apply` on a
# production host should not pay for QEMU plumbing it never uses.


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    """Add ``lab`` and its sub-commands."""
    _, lab_subs = group(
        subs,
        "lab",
        common,
        summary="fetch Debian kernels and boot them in QEMU",
        description="The development and CI lab: Debian kernel builds from the package "
        "archive (downloaded with apt, unpacked into $SUTURE_CACHE, never installed), and a "
        "QEMU guest (software emulation) that boots one with this machine's files visible.",
    )

    p = command(
        lab_subs, "list", common,
        summary="the builds of kernel sets, and what of them is cached",
        description="Each build of the sets as apt lists them now: release, image version, "
        "its exact source package or 'source gone', and what of it is cached.",
        examples=[("suture lab list --kernels debian12", "")],
        exits=(0, 20),
    )  # fmt: skip
    p.add_argument(
        "--kernels",
        action="append",
        default=[],
        metavar="SET",
        help="a kernel set, e.g. debian12 (repeatable; default: every set)",
    )
    p.set_defaults(handler=cmd_list)

    p = command(
        lab_subs, "update", common,
        summary="refresh Suture's private package lists now",
        description="Refresh the package lists Suture keeps of its own for the series the "
        "host's apt does not list (Debian 13, backports), under <cache>/apt/; they are "
        "otherwise refreshed when older than a day. The host's apt is never touched.",
        examples=[("suture lab update", "before 'suture lab list' of a newer series")],
        exits=(0, 20),
    )  # fmt: skip
    p.set_defaults(handler=cmd_update)

    p = command(
        lab_subs, "fetch", common,
        summary="download kernels into the cache",
        description="Download linux-image and linux-headers (with common and kbuild) of each "
        "build with apt, unpack them into the cache and extract vmlinux; never install.",
        examples=[("suture lab fetch", "the distribution's current build"),
                  ("suture lab fetch --kernel 6.1.0-57-amd64 --kernels debian12-cloud", ""),
                  ("suture lab fetch --kernel 6.12.118+deb13-amd64", "a Debian 13 build")],
        exits=(0, 20),
    )  # fmt: skip
    _kernel_options(p)
    p.set_defaults(handler=cmd_fetch)

    p = command(
        lab_subs, "cache", common,
        summary="what the cache holds; evict to its size limit",
        description="The cache's entries with their own and shared disk use and last use. "
        "--prune evicts least recently used entries (never one in use) until it fits.",
        examples=[("suture lab cache --prune --max 20G", "")],
        exits=(0, 20),
    )  # fmt: skip
    p.add_argument(
        "--prune",
        action="store_true",
        help="evict least recently used entries until the cache fits (entries in use stay)",
    )
    p.add_argument(
        "--max", metavar="SIZE", help="the size to prune to, e.g. 20G (default: $SUTURE_CACHE_MAX)"
    )
    p.set_defaults(handler=cmd_cache)

    p = command(
        lab_subs, "run", common,
        summary="boot a kernel and run a command in it as root",
        description="Boot the build under QEMU (software emulation) with this machine's root "
        "file system visible (writes stay in the guest), run the command as root, stream its "
        "output, and exit with its status. A panic, oops or timeout is an error with the "
        "console's last lines.",
        examples=[("suture lab run -- uname -r", ""),
                  ("suture lab run --kernel 6.1.0-57-amd64 --memory 2048 -- bash -c 'dmesg | tail'",
                   ""),
                  ("suture lab run --kernel 6.12.118+deb13-amd64 --root debian13 -- suture status",
                   "a Debian 13 build on a Debian 13 root, with this checkout's Suture")],
        exits=(0, 20),
    )  # fmt: skip
    p.add_argument(
        "--kernel", metavar="RELEASE", help="e.g. 6.1.0-47-amd64 (default: the current build)"
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds in all (300)")
    p.add_argument("--memory", type=int, default=1024, help="guest RAM in MiB (1024)")
    p.add_argument("--cpus", type=int, default=2, help="virtual CPUs (2)")
    p.add_argument(
        "--tcg-threads",
        choices=("auto", "multi", "single"),
        default="auto",
        help="a host thread per vCPU, or all in one (round robin); auto: round robin "
        "for 6.15 and later (ADR 21)",
    )
    p.add_argument(
        "--env", action="append", default=[], metavar="K=V", help="a guest variable (repeatable)"
    )
    p.add_argument("--append", default="", metavar="ARGS", help="extra kernel command line")
    p.add_argument(
        "--root",
        metavar="NAME",
        help="boot this root file system instead of the host's, e.g. debian13 "
        "(made once into the cache, with Suture installed from a wheel of this checkout)",
    )
    p.add_argument(
        "--host-path",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="with --root: a host folder the guest also sees, read-only (repeatable)",
    )
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    p.set_defaults(handler=cmd_run)


def _kernel_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kernel",
        action="append",
        default=[],
        metavar="RELEASE",
        help="a build, e.g. 6.1.0-47-amd64 (repeatable; default: current)",
    )
    p.add_argument(
        "--kernels",
        action="append",
        default=[],
        metavar="SET",
        help="every build of a kernel set, e.g. debian12 (repeatable; 'suture lab list')",
    )


def cmd_list(args: argparse.Namespace, out: Output) -> int:
    """Each build of the sets: image version, exact source or "source gone", what is cached."""
    from suture.builder import source as builder_source
    from suture.packages import kernels, sets, sources

    names = args.kernels or sorted(sets.SETS)
    rows: list[dict[str, object]] = []
    lines = [f"{'RELEASE':<30} {'IMAGE':<18} {'SOURCE':<36} CACHED"]
    for b in sets.describe(sets.resolve_kernels([], names)):
        cached = {
            "kernel": kernels.cached(b.release) is not None,
            "source": sources.cached(b.source_package, b.image_version) is not None,
            "tree": (builder_source.source_dir(b.release) / "tree.json").exists(),
        }
        rows.append({**b.to_dict(), "cached": cached})
        src = b.source_spec if b.source_available else "source gone"
        have = ",".join(k for k, v in cached.items() if v) or "-"
        lines.append(f"{b.release:<30} {b.image_version:<18} {src:<36} {have}")
    out.result({"format": 1, "ok": True, "sets": names, "builds": rows}, "\n".join(lines))
    return 0


def _releases(given: list[str]) -> list[str]:
    """The --kernel values, each a release name ("" would silently mean the default)."""
    for release in given:
        if not release.strip():
            raise UsageError(
                "--kernel needs a release, e.g. 6.1.0-57-amd64",
                hint="leave --kernel out for the distribution's current build",
            )
    return given


def cmd_fetch(args: argparse.Namespace, out: Output) -> int:
    """Download and unpack kernels: one (the default shape), or several (a list)."""
    _releases(args.kernel)
    from suture.packages import kernels, sets

    if len(args.kernel) <= 1 and not args.kernels:
        tree = kernels.fetch(args.kernel[0] if args.kernel else None)
        out.result(
            {"ok": True, **tree.to_dict()},
            f"{tree.release} ({tree.version}) is in {tree.root.parent}",
        )
        return 0
    trees = [kernels.fetch(r) for r in sets.resolve_kernels(args.kernel, args.kernels)]
    out.result(
        {"format": 1, "ok": True, "kernels": [t.to_dict() for t in trees]},
        "\n".join(f"{t.release} ({t.version}) is in {t.root.parent}" for t in trees),
    )
    return 0


def cmd_update(args: argparse.Namespace, out: Output) -> int:
    """Refresh the private package lists of every series that reads them."""
    from suture.packages import sets

    names = sets.refresh()
    out.result(
        {"format": 1, "ok": True, "updated": names},
        "\n".join(f"refreshed the package lists {n}" for n in names) or "nothing to refresh",
    )
    return 0


def cmd_cache(args: argparse.Namespace, out: Output) -> int:
    """Entries with their size and last use; with --prune, evict to the limit first."""
    from suture.fsutil import cache_dir
    from suture.packages import cache

    bound = cache.limit() if args.max is None else cache.parse_size(args.max)
    pruned = cache.prune(bound) if args.prune else None
    found = sorted(cache.entries(), key=lambda e: e.last_used, reverse=True)
    usage = cache.measure(found)
    busy = {e.key for e in found if cache.in_use(e.kind, e.name)}
    rows = [
        {
            "entry": e.key,
            "kind": e.kind,
            "name": e.name,
            "own_bytes": usage.own[e.key],
            "shared_bytes": usage.shared[e.key],
            "last_used": timefmt.utc(e.last_used),
            "in_use": e.key in busy,
            "source": e.source,
            "paths": [str(p) for p in e.paths],
        }
        for e in found
    ]
    data: dict[str, object] = {
        "format": 1,
        "ok": True,
        "cache": str(cache_dir()),
        "limit_bytes": bound,
        "total_bytes": usage.total,
        "other_bytes": usage.other,
        "entries": rows,
    }
    lines = [f"{'ENTRY':<44} {'OWN':>7} {'SHARED':>7}  {'LAST USED':<20}  IN USE"]
    lines += [
        f"{e.key:<44} {cache.human(usage.own[e.key]):>7} {cache.human(usage.shared[e.key]):>7}"
        f"  {timefmt.utc(e.last_used):<20}  {'yes' if e.key in busy else ''}"
        for e in found
    ]
    lines.append(
        f"total {cache.human(usage.total)} (hard links counted once) of "
        f"{cache.human(bound)} in {cache_dir()}"
    )
    if pruned is not None:
        data["pruned"] = pruned.to_dict()
        lines.append(
            f"pruned from {cache.human(pruned.before)} to {cache.human(pruned.after)}: "
            f"evicted {', '.join(pruned.evicted) or 'nothing'}"
        )
        if pruned.in_use:
            lines.append(f"in use, kept: {', '.join(pruned.in_use)}")
    out.result(data, "\n".join(lines))
    return 0


def _env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--env {pair!r} is not K=V", hint="write --env NAME=value")
        env[key] = value
    return env


def cmd_run(args: argparse.Namespace, out: Output) -> int:
    """Boot and run; exit with the guest command's status."""
    from suture.lab import guest, rootfs
    from suture.packages import kernels

    _releases([args.kernel] if args.kernel is not None else [])
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise UsageError("no command given", hint="suture lab run -- COMMAND [ARG...]")
    if args.host_path and not args.root:
        raise UsageError("--host-path needs --root", hint="the host's root shows every folder")
    root = rootfs.ensure(args.root) if args.root else None
    cfg = guest.GuestConfig(
        root=root,
        host_paths=tuple(args.host_path),
        memory_mb=args.memory,
        cpus=args.cpus,
        tcg_threads="" if args.tcg_threads == "auto" else args.tcg_threads,
        timeout=args.timeout,
        extra_cmdline=args.append,
        env=_env(args.env),
    )
    tree = kernels.fetch(args.kernel)
    out.message(f"booting {tree.release}")
    # In JSON mode the guest's output must not mix with the JSON document.
    sink = sys.stderr.buffer if out.json_mode else None
    sys.stdout.flush()
    result = guest.run(tree, cmd, cfg, cwd=Path.cwd(), stdout=sink)
    out.result(
        {
            "format": 1,
            "ok": result.returncode == 0,
            "release": tree.release,
            "root": args.root or "host",
            "returncode": result.returncode,
            "seconds": round(result.seconds, 3),
        },
        "",
    )
    return result.returncode
