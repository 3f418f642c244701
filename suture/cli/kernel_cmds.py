"""``suture apply``, ``suture status``, ``suture unload``: the livepatch engine on this host."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from suture.agent.local import apply_file
from suture.cli.output import Output
from suture.errors import UsageError
from suture.kernel import engine


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    """Add the engine's sub-commands."""
    p = subs.add_parser("apply", parents=[common], help="apply a live patch to this kernel")
    p.add_argument("module", type=Path, help="a bundle from 'suture build', or a livepatch .ko")
    p.add_argument("--timeout", type=float, default=30.0, help="transition limit in s (30)")
    p.set_defaults(handler=cmd_apply)

    p = subs.add_parser("status", parents=[common], help="show the kernel and its live patches")
    p.set_defaults(handler=cmd_status)

    p = subs.add_parser("unload", parents=[common], help="disable and remove live patches")
    p.add_argument("name", nargs="?", help="the live patch to remove")
    p.add_argument("--all", action="store_true", help="remove every live patch")
    p.add_argument("--timeout", type=float, default=30.0, help="transition limit in s (30)")
    p.set_defaults(handler=cmd_unload)


def _policy(args: argparse.Namespace) -> engine.TransitionPolicy:
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive", hint="give seconds, e.g. --timeout 30")
    return engine.TransitionPolicy(timeout=args.timeout)


def cmd_apply(args: argparse.Namespace, out: Output) -> int:
    """Apply one live patch."""
    policy = _policy(args)
    out.message(f"applying {args.module}")
    result = apply_file(args.module, policy)
    text = f"applied {result.name}: transition complete in {result.seconds:.3f} s"
    if result.superseded:
        text += f"; replaced {', '.join(result.superseded)}"
    out.result({"format": 1, "ok": True, **result.to_dict()}, text)
    return 0


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    """Show the running kernel and its patches."""
    data = engine.status()
    kernel: dict[str, Any] = data["kernel"]  # type: ignore[assignment]
    lines = [
        f"kernel:    {kernel['release']} ({kernel['arch']})",
        f"build id:  {kernel['build_id'] or 'unknown'}",
        f"livepatch: {'yes' if kernel['livepatch'] else 'no'}"
        f"   lockdown: {kernel['lockdown'] or 'n/a'}   taint: {kernel['taint_flags'] or '-'}",
    ]
    patches: list[dict[str, Any]] = data["patches"]  # type: ignore[assignment]
    if not patches:
        lines.append("patches:   none")
    for p in patches:
        state = "in transition" if p["transition"] else ("enabled" if p["enabled"] else "disabled")
        lines.append(f"patch:     {p['name']} ({state})")
        for obj in p["objects"]:
            funcs = ", ".join(f["name"] for f in obj["functions"])
            lines.append(f"  {obj['name']}{'' if obj['patched'] else ' (not loaded)'}: {funcs}")
    out.result(data, "\n".join(lines))
    return 0


def cmd_unload(args: argparse.Namespace, out: Output) -> int:
    """Remove one or all live patches."""
    policy = _policy(args)
    if args.all == bool(args.name):
        raise UsageError("name one live patch or give --all", hint="see 'suture status'")
    if args.all:
        removed = engine.unload_all(policy)
    else:
        engine.unload(args.name, policy)
        removed = [args.name]
    text = f"removed {', '.join(removed)}" if removed else "no live patches were loaded"
    out.result({"format": 1, "ok": True, "removed": removed}, text)
    return 0
