"""``suture apply``, ``suture status``, ``suture unload``: the livepatch engine on this host."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from suture.cli.helptext import command
from suture.cli.output import Output
from suture.errors import UsageError

if TYPE_CHECKING:
    from suture.kernel import engine

# The engine and the bundle reader are imported inside the handlers: every
# command (and the agent's every run) would otherwise pay for them.


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    """Add the engine's sub-commands."""
    p = command(
        subs,
        "apply",
        common,
        summary="apply a live patch (a bundle or a .ko) to this kernel",
        description="Pre-flight (livepatch present, built for this exact build, signature "
        "policy, not loaded already, no kprobe or IPMODIFY tracer on a replaced function), "
        "load, and wait for the transition; back out when it does not finish in time. Inside "
        "the kernel the patch first checks that each function it replaces is the code it was "
        "built against (pre-match), and refuses otherwise. A cumulative patch retires the ones "
        "it supersedes.\n\n"
        "A userspace bundle (a glibc or OpenSSL fix) is applied in the running processes that "
        "map its library build instead: each one is stopped for a moment (ptrace), its old "
        "code checked, and its functions redirected; a process that cannot be patched safely "
        "is left as it was and listed.",
        examples=[
            ("suture apply fix.bundle", "a bundle from 'suture build' (its manifest is checked)"),
            ("suture apply livepatch.ko --timeout 60", "a bare module, a longer transition"),
            ("suture apply glibc-fix.bundle --pid 1234", "a userspace bundle, one process"),
        ],
        exits=(0, 30, 31, 32, 33, 35, 36, 37, 38, 39, 50),
    )
    p.add_argument("module", type=Path, help="a bundle from 'suture build', or a livepatch .ko")
    p.add_argument("--timeout", type=float, default=30.0, help="transition limit in s (30)")
    _userspace_options(p, "only these processes (default: every one mapping the library)")
    p.set_defaults(handler=cmd_apply)

    p = command(
        subs,
        "status",
        common,
        summary="the kernel, its live patches and the agent's level",
        description="The running kernel (release, build id, lockdown, taint), each live patch "
        "with its objects and functions (and any function its pre-match check refused), the "
        "level the agent applied, the CVEs it fixes in memory, and the agent's last cycle. It "
        "exits as 'suture info' would after that cycle.",
        examples=[
            ("suture status", "for people"),
            ("suture status --json | jq .agent.level", "the live level, for scripts"),
        ],
        exits=(0, 1, 2, 3, 4, 30),
    )
    p.add_argument("--state-dir", type=Path, metavar="DIR", help="the agent's state folder")
    p.set_defaults(handler=cmd_status)

    p = command(
        subs,
        "unload",
        common,
        summary="disable and remove live patches",
        description="Disable the live patch, wait for the transition, and remove its module. "
        "A disable that cannot finish is reversed, so the patch stays whole, never half. A "
        "module the kernel may still point into (a carried copy a stored pointer led to) stays "
        "loaded and is reported kept. The name of a userspace patch takes it out of the "
        "processes that run it.",
        examples=[
            ("suture unload suture_fix_1", "one patch (names: suture status)"),
            ("suture unload --all", "every live patch, newest first"),
        ],
        exits=(0, 30, 32, 33, 34, 35, 36, 38, 39),
    )
    p.add_argument("name", nargs="?", help="the live patch to remove")
    p.add_argument("--all", action="store_true", help="remove every live patch")
    p.add_argument("--timeout", type=float, default=30.0, help="transition limit in s (30)")
    _userspace_options(p, "only from these processes")
    p.set_defaults(handler=cmd_unload)


def _policy(args: argparse.Namespace) -> engine.TransitionPolicy:
    from suture.kernel import engine

    if args.timeout <= 0:
        raise UsageError("--timeout must be positive", hint="give seconds, e.g. --timeout 30")
    return engine.TransitionPolicy(timeout=args.timeout)


def _userspace_bundle(path: Path) -> bool:
    from suture import bundle

    if not bundle.is_bundle(path):
        return False
    return bundle.read_manifest(path).kind == "userspace"


# Exit of a userspace apply/unload that left some processes out (refused, busy, mismatch).
EXIT_USER_PARTIAL = 39


def _user_report(report: Any, out: Output, verb: str) -> int:
    rows = [o.to_dict() for o in report.outcomes]
    done = report.count("patched", "already", "removed", "absent")
    # A process that exited meanwhile runs no old code: it is not left out.
    wanted = len(rows) - report.count("gone")
    lines = [f"{verb} {report.name}: {done} of {wanted} processes in {report.seconds:.3f} s"]
    lines += [
        f"  pid {r['pid']}: {r['result']}"
        + (f" L{r['level']}" if r["level"] else "")
        + (f" (pause {r['pause_ms']:.2f} ms)" if r["pause_ms"] else "")
        + (f": {r['reason']}" if r["reason"] else "")
        for r in rows
    ]
    out.result({"format": 1, "ok": done == wanted, **report.to_dict()}, "\n".join(lines))
    return 0 if done == wanted else EXIT_USER_PARTIAL


def cmd_apply(args: argparse.Namespace, out: Output) -> int:
    """Apply one live patch (kernel, or userspace in running processes)."""
    from suture.agent.local import apply_file

    if _userspace_bundle(args.module):
        from suture.userspace import fleet, patcher

        user_policy = patcher.Policy(timeout=min(args.timeout, 30.0), allow_init=args.allow_init)
        report = fleet.apply(args.module, args.pid, user_policy, workers=args.workers)
        return _user_report(report, out, "applied")
    if args.pid:
        raise UsageError("--pid is for userspace bundles", hint="a kernel patch is host-wide")
    policy = _policy(args)
    out.message(f"applying {args.module}")
    result = apply_file(args.module, policy)
    text = f"applied {result.name}: transition complete in {result.seconds:.3f} s"
    if result.superseded:
        text += f"; replaced {', '.join(result.superseded)}"
    if result.kept:
        text += f" ({', '.join(result.kept)} kept loaded: the kernel may still point into it)"
    out.result({"format": 1, "ok": True, **result.to_dict()}, text)
    return 0


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    """Show the running kernel, its patches and what the agent did; exit as ``suture info``."""
    from suture.kernel import engine

    data = engine.status()
    kernel: dict[str, Any] = data["kernel"]  # type: ignore[assignment]
    patches: list[dict[str, Any]] = data["patches"]  # type: ignore[assignment]
    agent, code = _agent(args, kernel, {p["name"] for p in patches if p["enabled"]})
    data["agent"] = agent
    user = _userspace_status(args)
    if user:
        data["userspace"] = user
    lines = [
        f"kernel:    {kernel['release']} ({kernel['arch']})",
        f"build id:  {kernel['build_id'] or 'unknown'}",
        f"livepatch: {'yes' if kernel['livepatch'] else 'no'}"
        f"   lockdown: {kernel['lockdown'] or 'n/a'}   taint: {kernel['taint_flags'] or '-'}",
    ]
    if not patches:
        lines.append("patches:   none")
    for p in patches:
        state = "in transition" if p["transition"] else ("enabled" if p["enabled"] else "disabled")
        lines.append(f"patch:     {p['name']} ({state})")
        for obj in p["objects"]:
            funcs = ", ".join(f["name"] for f in obj["functions"])
            lines.append(f"  {obj['name']}{'' if obj['patched'] else ' (not loaded)'}: {funcs}")
        for entry in p.get("prematch_refused", []):
            lines.append(
                f"  REFUSED by pre-match: {entry} is not the code the patch was built for "
                "(that module was not loaded)"
            )
    lines += _agent_lines(agent)
    lines += [_userspace_line(row) for row in user]
    out.result(data, "\n".join(lines))
    return code


def _userspace_status(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per library build: the agent's level and the processes patched, unpatched, refused (why).

    Counted live from /proc (the patch headers in each process's memory: root
    reads them). Builds without a recorded level show when some process has
    a Suture patch of them (applied by hand).
    """
    from suture.agent import config, userlevels

    state_dir = args.state_dir or config.load().state_dir
    levels = userlevels.read(state_dir)
    if not levels and os.geteuid() != 0:
        return []
    from suture.userspace import fleet

    rows = []
    for row in fleet.status(list(levels)):
        lvl = levels.get(row["build_id"])
        left = len(row["unpatched"]) + sum(len(v) for v in row["refused"].values())
        patched = sum(len(v) for v in row["patched"].values())
        rows.append({
            **row, "library": row["library"] or (lvl.soname if lvl else ""),
            "level": lvl.level if lvl else 0, "name": lvl.name if lvl else "",
            "cves": list(lvl.cves) if lvl else [],
            "state": "patched" if patched and not left else ("partial" if patched else "unpatched"),
        })  # fmt: skip
    return rows


def _userspace_line(row: dict[str, Any]) -> str:
    patched = sum(len(v) for v in row["patched"].values())
    refused = ", ".join(f"{k} {len(v)}" for k, v in sorted(row["refused"].items()))
    return (
        f"userspace: {row['library'] or '?'} ({row['build_id'][:12]}) "
        f"level {row['level'] or '-'} {row['name']}: {row['state']}, {patched} patched, "
        f"{len(row['unpatched'])} unpatched" + (f", refused: {refused}" if refused else "")
    )


def _agent(
    args: argparse.Namespace, kernel: dict[str, Any], live: set[str]
) -> tuple[dict[str, Any], int]:
    """The agent's part of the status: level, CVEs fixed in memory, last check; and the code."""
    from suture.agent import state
    from suture.agent.outcome import exit_code
    from suture.cli.agent_cmds import agent_config

    if args.state_dir is not None and not args.state_dir.is_absolute():
        raise UsageError(f"--state-dir {args.state_dir} is not an absolute path")
    state_dir = args.state_dir or agent_config(argparse.Namespace()).state_dir
    current = state.read(state_dir)
    release, build_id = kernel["release"], kernel["build_id"] or ""
    live_level = current.live_level(release, build_id, live)
    a = current.applied
    data = {
        "state_dir": str(state_dir),
        "level": live_level,
        "patch": a.patch if live_level and a else None,
        "cves": list(a.cves) if live_level and a else [],
        "effective_release": state.effective_release(release, build_id, current, live),
        **{k: v for k, v in current.to_dict().items() if k in ("last_check", "held")},
        "confirmed": bool(a and a.confirmed) if live_level else None,
    }
    if not (kernel["livepatch"] and build_id):
        return data, exit_code("unsupported")
    return data, exit_code(current.last_result) if current.last_result else 0


def _agent_lines(agent: dict[str, Any]) -> list[str]:
    check = agent["last_check"]
    lines = [f"level:     {agent['level'] or 'none'} ({agent['effective_release']})"]
    if agent["cves"]:
        lines.append(f"fixes:     {', '.join(agent['cves'])}")
    if check["at"]:
        lines.append(f"checked:   {check['at']}: {check['result']}")
        if check["error"]:
            lines.append(f"error:     {check['error']['message']}")
    else:
        lines.append("checked:   never (the agent has not run)")
    if agent["held"]:
        lines.append(f"held:      level {agent['held']['level']}: {agent['held']['reason']}")
    return lines


def cmd_unload(args: argparse.Namespace, out: Output) -> int:
    """Remove one or all live patches."""
    from suture.kernel import engine, module

    policy = _policy(args)
    if args.name and not args.all and _userspace_name(args.name, args.pid):
        from suture.userspace import fleet, patcher

        user_policy = patcher.Policy(timeout=args.timeout, allow_init=args.allow_init)
        report = fleet.unload(args.name, args.pid, user_policy, workers=args.workers)
        return _user_report(report, out, "removed")
    if args.all == bool(args.name):
        raise UsageError("name one live patch or give --all", hint="see 'suture status'")
    if args.all:
        removed = engine.unload_all(policy)
    else:
        engine.unload(args.name, policy)
        removed = [args.name]
    kept = [n for n in removed if module.kept(n)]
    gone = [n for n in removed if n not in kept]
    parts = [f"removed {', '.join(gone)}"] if gone else []
    if kept:
        parts.append(
            f"disabled {', '.join(kept)}; its module stays loaded: the kernel may still point "
            "into its code or data (docs/adr/0010)"
        )
    text = "; ".join(parts) or "no live patches were loaded"
    out.result({"format": 1, "ok": True, "removed": removed, "kept": kept}, text)
    return 0


def _userspace_name(name: str, pids: list[int]) -> bool:
    """True when ``name`` is a userspace patch: --pid given, or some process runs it."""
    if pids:
        return True
    if (Path("/sys/kernel/livepatch") / name).exists():
        return False
    from suture.userspace import patcher, procfs

    return any(a.name == name for pid in procfs.pids() for a in patcher.applied_patches(pid))


def _userspace_options(p: argparse.ArgumentParser, pids: str) -> None:
    """The options of ``apply`` and ``unload`` that only userspace patches take."""
    p.add_argument(
        "--pid", type=int, action="append", default=[], metavar="PID", help=f"userspace: {pids}"
    )
    p.add_argument("--allow-init", action="store_true", help="userspace: PID 1 too")
    p.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        metavar="N",
        help="userspace: processes handled by N forked workers at once (CPUs, at most 2)",
    )
