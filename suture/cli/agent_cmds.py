"""The agent on this host: ``update``, ``info``, ``uname``, ``daemon``, ``boot``.

Exit codes of ``update``, ``info`` and ``status`` (errors keep their own, see main.py):
    0   up to date, or the newest level was applied
    1   the repository has no live patch for this kernel build and channel
    2   a newer level is offered but not applied (``info``; ``update`` within
        the configured update delay)
    3   this kernel cannot be live patched (no livepatch core or no build id)
    4   the crash-loop guard holds the newest level (``status``: or the last
        check failed; its error is shown)

``suture boot`` exits 0 when the cached level is live again (or there was
nothing to re-apply), 4 when the guard held it, 3 on an unsupported kernel.

``suture uname`` prints what ``uname`` prints, with the release as
``<release>+suture.L<level>`` while a level applied by the agent is enabled on
exactly this kernel build, and the plain release otherwise (nothing applied,
after a reboot, or after ``suture unload``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from suture.cli.output import Output
from suture.repo.layout import CHANNELS

if TYPE_CHECKING:
    from suture.agent.config import AgentConfig
    from suture.agent.cycle import UpdateResult

# The TUF client and the engine are imported inside the handlers: `suture apply`
# and `suture uname` should not load them.

EXIT_CODES = {
    "up-to-date": 0,
    "applied": 0,
    "no-patches": 1,
    "pending": 2,
    "unsupported": 3,
    "held": 4,
    "error": 4,
}


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    """Add ``update``, ``info`` and ``uname``."""
    p = subs.add_parser(
        "update", parents=[common], help="apply the newest live patch level for this kernel"
    )
    _config_options(p)
    p.add_argument("--now", action="store_true", help="do not wait for the configured update delay")
    p.add_argument(
        "--clear-hold",
        action="store_true",
        help="apply a level the crash-loop guard holds back (check why the host went down first)",
    )
    p.set_defaults(handler=cmd_update)

    p = subs.add_parser(
        "daemon", parents=[common], help="check in periodically and apply (systemd: Type=notify)"
    )
    _config_options(p)
    p.set_defaults(handler=cmd_daemon)

    p = subs.add_parser(
        "boot", parents=[common], help="re-apply the cached level after boot (crash-loop guarded)"
    )
    p.add_argument("--state-dir", type=Path, metavar="DIR", help="the agent's state folder")
    p.add_argument("--config", type=Path, metavar="FILE", help="agent.toml to read")
    p.set_defaults(handler=cmd_boot)

    p = subs.add_parser(
        "info", parents=[common], help="what the repository offers this kernel (applies nothing)"
    )
    _config_options(p)
    p.set_defaults(handler=cmd_info)

    p = subs.add_parser(
        "uname", parents=[common], help="uname, with the live patch level in the release"
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("-r", "--kernel-release", action="store_true", help="the release only")
    which.add_argument("-a", "--all", action="store_true", help="every field, as uname -a")
    p.add_argument("--state-dir", type=Path, metavar="DIR", help="the agent's state folder")
    p.set_defaults(handler=cmd_uname)


def _config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", metavar="URL", help="repository base URL (serves metadata/)")
    p.add_argument("--trusted-root", type=Path, metavar="FILE", help="the repository's root.json")
    p.add_argument("--channel", choices=CHANNELS, help="stable or testing")
    p.add_argument("--state-dir", type=Path, metavar="DIR", help="the agent's state folder")
    p.add_argument("--config", type=Path, metavar="FILE", help="agent.toml to read")
    p.add_argument(
        "--retries", metavar="N", help="more tries when the server cannot be reached (config: 3)"
    )
    p.add_argument(
        "--registration-key", metavar="KEY", help="enrol with the fleet server (first run)"
    )


def _config(args: argparse.Namespace) -> AgentConfig:
    from suture.agent import config

    options = ("server", "trusted_root", "channel", "state_dir", "retries", "registration_key")
    overrides = {k: getattr(args, k, None) for k in options}
    if isinstance(overrides["state_dir"], Path):
        overrides["state_dir"] = overrides["state_dir"].absolute()
    if isinstance(overrides["trusted_root"], Path):
        overrides["trusted_root"] = overrides["trusted_root"].absolute()
    return config.load(getattr(args, "config", None), overrides=overrides)


def cmd_update(args: argparse.Namespace, out: Output) -> int:
    """Run one update cycle."""
    from suture.agent import cycle

    cfg = _config(args)
    out.message(f"checking {cfg.server} ({cfg.channel})")
    _report(cfg, out)  # brings the fleet server's directive for this host
    changed = True
    try:
        result = cycle.run_update(cfg, honour_delay=not args.now, clear_hold=args.clear_hold)
        changed = result.outcome in (cycle.Outcome.APPLIED, cycle.Outcome.HELD)
    finally:
        if changed:
            _report(cfg, out)  # and says what came of it
        _write_metrics(cfg, out)
    out.result({"ok": True, **result.to_dict()}, _describe(result))
    return EXIT_CODES[result.outcome]


def _report(cfg: AgentConfig, out: Output) -> None:
    """Check in with the server; a failure is a warning, never the command's outcome."""
    import time

    from suture.agent import report
    from suture.agent.host import HostKernel
    from suture.errors import SutureError

    try:
        failure = report.exchange(cfg, HostKernel(), time.time())
    except SutureError as e:
        failure = e.message
    if failure:
        out.message(f"warning: {failure}")


def _write_metrics(cfg: AgentConfig, out: Output) -> None:
    """Refresh the node exporter textfile (metrics_file); a failure is a warning."""
    from suture.agent import metrics
    from suture.agent.host import HostKernel
    from suture.errors import SutureError

    try:
        metrics.write(cfg, HostKernel())
    except SutureError as e:
        out.message(f"warning: {e.message}")


def cmd_daemon(args: argparse.Namespace, out: Output) -> int:
    """Run the agent's loop until SIGTERM or SIGINT."""
    import signal

    from suture.agent.daemon import Daemon

    cfg = _config(args)
    daemon = Daemon(cfg, log=out.message)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: daemon.stop())
    daemon.run()
    out.result({"format": 1, "ok": True, "cycles": daemon.cycles}, "")
    return 0


def cmd_boot(args: argparse.Namespace, out: Output) -> int:
    """Re-apply the cached level if it belongs on this kernel build."""
    from suture.agent import boot

    cfg = _config(args)
    r = boot.reapply(cfg)
    kernel = f"{r.release} ({r.build_id[:12] or 'no build id'})"
    text = {
        "reapplied": f"level {r.level} ({r.patch}) is live again on {kernel}",
        "live": f"level {r.level} ({r.patch}) is already live",
        "nothing": "no level was applied before; nothing to re-apply",
        "other-kernel": f"level {r.level} was for another kernel build; {kernel} starts "
        "unpatched (the agent looks for its patches)",
        "held": f"level {r.level} NOT re-applied: {r.reason}. Check the host's logs, then "
        "'suture update --clear-hold' applies it again",
        "unsupported": f"{kernel} cannot be live patched",
    }[r.outcome]
    out.result({"ok": r.outcome != "held", **r.to_dict()}, text)
    return {"held": 4, "unsupported": 3}.get(r.outcome, 0)


def cmd_info(args: argparse.Namespace, out: Output) -> int:
    """Say what the repository offers, and whether it is applied."""
    from suture.agent import cycle

    cfg = _config(args)
    _report(cfg, out)  # the fleet server's current word on this host's level
    result = cycle.check(cfg)
    out.result({"ok": True, **result.to_dict()}, _describe(result))
    return EXIT_CODES[result.outcome]


def _describe(r: UpdateResult) -> str:
    kernel = f"{r.release} ({r.build_id[:12] or 'no build id'})"
    offered = f"level {r.available} of {r.name}" if r.available else ""
    fixes = f"\nfixes:   {', '.join(r.cves)}" if r.cves else ""
    sticky = f" (sticky level {r.sticky_level})" if r.sticky_level is not None else ""
    text = {
        "up-to-date": f"up to date: level {r.level} is live on {kernel}{sticky}",
        "applied": f"applied {offered} on {kernel} (was level {r.previous})"
        + (f"; replaced {', '.join(r.superseded)}" if r.superseded else ""),
        "pending": f"{offered} is available on {r.channel}{sticky}; level {r.level} is live",
        "no-patches": f"no live patches for {kernel} on {r.channel}",
        "unsupported": f"{kernel} cannot be live patched (no livepatch core or no build id)",
        "held": f"level {r.available} is held by the crash-loop guard (the host went down "
        f"soon after it was applied); level {r.level} is live. "
        "'suture update --clear-hold' applies it",
    }[r.outcome]
    note = "\nnote:    an interrupted update was found and finished" if r.recovered else ""
    return text + fixes + _TESTED.get(r.tested, "") + note


# The offered level's signed lab test (publish --untested lets the last two through).
_TESTED = {
    "passed": "\ntested:  passed in the lab on this build",
    "failed": "\ntested:  FAILED its lab test (published with --untested)",
    "untested": "\ntested:  not tested (published with --untested)",
}


def cmd_uname(args: argparse.Namespace, out: Output) -> int:
    """Print uname with the effective (patched) release."""
    from suture.agent import state
    from suture.errors import AgentStateError
    from suture.kernel.identity import read_identity
    from suture.kernel.livepatch import LivepatchSysfs

    state_dir = args.state_dir or _config(argparse.Namespace()).state_dir
    ident = read_identity()
    live = {s.name for s in LivepatchSysfs().states() if s.enabled}
    try:
        current = state.read(state_dir)
    except AgentStateError as e:
        out.message(f"{e.message}; showing the plain release")
        current = state.AgentState()
    release = state.effective_release(ident.release, ident.build_id, current, live)
    u = os.uname()
    if args.all:
        text = f"{u.sysname} {u.nodename} {release} {u.version} {u.machine} GNU/Linux"
    else:
        text = release if args.kernel_release else u.sysname
    level = current.level_for(ident.release, ident.build_id) if release != ident.release else 0
    data = {
        "format": 1,
        "sysname": u.sysname,
        "nodename": u.nodename,
        "release": ident.release,
        "effective_release": release,
        "level": level,
        "version": u.version,
        "machine": u.machine,
    }
    out.result(data, text)
    return 0
