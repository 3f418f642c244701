"""``suture lab fetch`` and ``suture lab run``: Debian kernels under QEMU for development and CI."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from suture.cli.output import Output
from suture.errors import UsageError

# The lab's modules are imported inside the handlers: `suture apply` on a
# production host should not pay for QEMU plumbing it never uses.


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    """Add ``lab`` and its sub-commands."""
    lab = subs.add_parser("lab", parents=[common], help="fetch and boot distro kernels in QEMU")
    lab_subs = lab.add_subparsers(dest="lab_command", required=True, metavar="COMMAND")

    p = lab_subs.add_parser("fetch", parents=[common], help="download a kernel into the cache")
    p.add_argument("--kernel", metavar="RELEASE", help="e.g. 6.1.0-47-amd64 (default: current)")
    p.set_defaults(handler=cmd_fetch)

    p = lab_subs.add_parser(
        "run", parents=[common], help="boot a kernel and run a command in it as root"
    )
    p.add_argument("--kernel", metavar="RELEASE", help="e.g. 6.1.0-47-amd64 (default: current)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds in all (300)")
    p.add_argument("--memory", type=int, default=1024, help="guest RAM in MiB (1024)")
    p.add_argument("--cpus", type=int, default=2, help="virtual CPUs (2)")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="guest variable")
    p.add_argument("--append", default="", metavar="ARGS", help="extra kernel command line")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    p.set_defaults(handler=cmd_run)


def cmd_fetch(args: argparse.Namespace, out: Output) -> int:
    """Download and unpack a kernel."""
    from suture.lab import kernels

    tree = kernels.fetch(args.kernel)
    out.result(
        {"ok": True, **tree.to_dict()},
        f"{tree.release} ({tree.version}) is in {tree.root.parent}",
    )
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
    from suture.lab import guest, kernels

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise UsageError("no command given", hint="suture lab run -- COMMAND [ARG...]")
    cfg = guest.GuestConfig(
        memory_mb=args.memory,
        cpus=args.cpus,
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
            "returncode": result.returncode,
            "seconds": round(result.seconds, 3),
        },
        "",
    )
    return result.returncode
