"""The agent on this host: ``update``, ``daemon``, ``boot``, ``info``, ``uname``.

``update`` and the daemon run the same cycle (:func:`suture.agent.cycle.run_cycle`).
``update``, ``info``, ``status`` and ``boot`` exit by their outcome through one
table (:func:`suture.agent.outcome.exit_code`); an error exits with its own code.

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

from suture.cli.helptext import command
from suture.cli.output import Output
from suture.errors import UsageError
from suture.repo.layout import CHANNELS

if TYPE_CHECKING:
    from suture.agent.config import AgentConfig
    from suture.agent.run import UpdateResult

# The TUF client and the engine are imported inside the handlers: `suture apply`
# and `suture uname` should not load them.

_AGENT_EXITS = (0, 1, 2, 3, 4, 30, 31, 32, 33, 50, 70, 71, 72)


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    """Add ``update``, ``daemon``, ``boot``, ``info`` and ``uname``."""
    p = command(
        subs,
        "update",
        common,
        summary="apply the newest live patch level for this kernel build",
        description="One agent cycle: check in with the fleet server (its directive caps "
        "the level), refresh the repository's signed metadata, find the newest level for "
        "exactly this kernel build and channel, download and verify it, apply it, record "
        "it, check in again, and refresh the metrics file. A level the repository withdrew "
        "is left for the newest one still offered. An unreachable server is retried with a "
        "doubling wait.\n\nSettings come from /etc/suture/agent.toml, then the environment, "
        "then these options.",
        examples=[
            ("suture update", "apply what the configuration allows (honours update_delay_hours)"),
            ("suture update --now", "apply the newest level now, without the update delay"),
            (
                "suture update --server https://patches.example.com/repo "
                "--trusted-root /etc/suture/root.json",
                "a first run without a configuration file",
            ),
            ("suture update --clear-hold", "apply a level the crash-loop guard holds back"),
        ],
        exits=_AGENT_EXITS,
    )
    _config_options(p)
    p.add_argument("--now", action="store_true", help="do not wait for the configured update delay")
    p.add_argument(
        "--clear-hold",
        action="store_true",
        help="apply a level the crash-loop guard holds back (check why the host went down first)",
    )
    p.set_defaults(handler=cmd_update)

    p = command(
        subs,
        "daemon",
        common,
        summary="the agent's loop: a cycle every check_interval (systemd: Type=notify)",
        description="Run the update cycle every check_interval seconds plus a random jitter "
        "(auto_update = false: only check and report). It tells systemd READY, a STATUS per "
        "cycle and STOPPING; SIGTERM ends it after the cycle under way. No failure of a cycle "
        "ends it: errors are recorded, reported and retried with a backoff. Normally run by "
        "suture-agent.service.",
        examples=[
            ("systemctl enable --now suture-agent", "the usual way: the packaged unit"),
            ("suture daemon --verbose", "in the foreground, with details"),
        ],
        exits=(0,),
    )
    _config_options(p)
    p.set_defaults(handler=cmd_daemon)

    p = command(
        subs,
        "boot",
        common,
        summary="re-apply the cached level after boot (crash-loop guarded, no network)",
        description="Early in boot (suture-boot.service), apply the level the agent last "
        "applied, from its cached and verified bundle, if it was for exactly this kernel "
        "build. A level during whose probation the previous boot ended is held instead, "
        "and a level the agent saw withdrawn is never applied again.",
        examples=[("suture boot", "what suture-boot.service runs")],
        exits=(0, 3, 4, 30, 31, 32, 33),
    )
    p.add_argument("--state-dir", type=Path, metavar="DIR", help="the agent's state folder")
    p.add_argument("--config", type=Path, metavar="FILE", help="agent.toml to read (must exist)")
    p.set_defaults(handler=cmd_boot)

    p = command(
        subs,
        "info",
        common,
        summary="what the repository offers this kernel build (applies nothing)",
        description="Check in, refresh the signed metadata, and say which level the "
        "repository offers this exact kernel build on the channel, what it fixes, whether it "
        "passed its lab test, and whether it is live.",
        examples=[("suture info --json", "the offer as JSON")],
        exits=(0, 1, 2, 3, 70, 71, 72),
    )
    _config_options(p)
    p.set_defaults(handler=cmd_info)

    p = command(
        subs,
        "uname",
        common,
        summary="uname, with the live patch level in the release",
        description="Print what uname prints; the release reads RELEASE+suture.LN while level "
        "N, applied by the agent, is live on exactly this kernel build.",
        examples=[("suture uname -r", "e.g. 6.1.0-57-amd64+suture.L3")],
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
    p.add_argument(
        "--state-dir", type=Path, metavar="DIR", help="the agent's state folder (absolute)"
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="agent.toml to read (must exist)")
    p.add_argument(
        "--retries", metavar="N", help="more tries when the server cannot be reached (config: 3)"
    )
    p.add_argument(
        "--registration-key", metavar="KEY", help="enrol with the fleet server (first run)"
    )


def agent_config(args: argparse.Namespace) -> AgentConfig:
    """The agent's configuration: the file, the environment, then the command line.

    Raises:
        ConfigError: a bad setting (64), naming where it came from.
    """
    from suture.agent import config

    options = ("server", "trusted_root", "channel", "state_dir", "retries", "registration_key")
    overrides = {k: getattr(args, k, None) for k in options}
    if isinstance(overrides["trusted_root"], Path):
        # A file read now: relative to where the command runs. The state
        # folder is not made absolute: it must be given so (config checks).
        overrides["trusted_root"] = overrides["trusted_root"].absolute()
    return config.load(getattr(args, "config", None), overrides=overrides)


def cmd_update(args: argparse.Namespace, out: Output) -> int:
    """Run one agent cycle."""
    from suture.agent import cycle
    from suture.agent.outcome import exit_code

    cfg = agent_config(args)
    out.message(f"checking {cfg.server or '(no server)'} ({cfg.channel})")
    result = cycle.run_cycle(cfg, honour_delay=not args.now, clear_hold=args.clear_hold).unwrap()
    out.result({"ok": True, **result.to_dict()}, _describe(result))
    return exit_code(result.outcome)


def cmd_daemon(args: argparse.Namespace, out: Output) -> int:
    """Run the agent's loop until SIGTERM or SIGINT."""
    import signal

    from suture.agent.daemon import Daemon

    cfg = agent_config(args)
    daemon = Daemon(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: daemon.stop())
    daemon.run()
    out.result({"format": 1, "ok": True, "cycles": daemon.cycles}, "")
    return 0


def cmd_boot(args: argparse.Namespace, out: Output) -> int:
    """Re-apply the cached level if it belongs on this kernel build."""
    from suture.agent import boot
    from suture.agent.outcome import exit_code

    cfg = agent_config(args)
    r = boot.reapply(cfg)
    kernel = f"{r.release} ({r.build_id[:12] or 'no build id'})"
    text = {
        "reapplied": f"level {r.level} ({r.patch}) is live again on {kernel}",
        "live": f"level {r.level} ({r.patch}) is already live",
        "nothing": "no level was applied before; nothing to re-apply",
        "other-kernel": f"level {r.level} was for another kernel build; {kernel} starts "
        "unpatched (the agent looks for its patches)",
        "withdrawn": f"level {r.level} NOT re-applied: the repository withdrew it; the agent "
        "looks for the newest level still offered",
        "held": f"level {r.level} NOT re-applied: {r.reason}. Check the host's logs, then "
        "'suture update --clear-hold' applies it again",
        "unsupported": f"{kernel} cannot be live patched",
    }[r.outcome]
    out.result({"ok": r.outcome != "held", **r.to_dict()}, text)
    return exit_code(r.outcome)


def cmd_info(args: argparse.Namespace, out: Output) -> int:
    """Say what the repository offers, and whether it is applied."""
    from suture.agent import cycle
    from suture.agent.outcome import exit_code

    cfg = agent_config(args)
    result = cycle.run_cycle(cfg, apply=False).unwrap()
    out.result({"ok": True, **result.to_dict()}, _describe(result))
    return exit_code(result.outcome)


def _describe(r: UpdateResult) -> str:
    kernel = f"{r.release} ({r.build_id[:12] or 'no build id'})"
    offered = f"level {r.available} of {r.name}" if r.available else ""
    fixes = f"\nfixes:   {', '.join(r.cves)}" if r.cves else ""
    sticky = f" (sticky level {r.sticky_level})" if r.sticky_level is not None else ""
    gone = f"level {r.withdrawn} was withdrawn from the repository; " if r.withdrawn else ""
    text = {
        "up-to-date": f"up to date: level {r.level} is live on {kernel}{sticky}",
        "applied": f"{gone}applied {offered} on {kernel} (was level {r.previous})"
        + (f"; replaced {', '.join(r.superseded)}" if r.superseded else ""),
        "removed": f"{gone}no level is left to go to: removed it, {kernel} runs unpatched",
        "pending": f"{gone}{offered or 'no level'} is available on {r.channel}{sticky}; "
        f"level {r.level} is live",
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

    if args.state_dir is not None and not args.state_dir.is_absolute():
        raise UsageError(f"--state-dir {args.state_dir} is not an absolute path")
    state_dir = args.state_dir or agent_config(argparse.Namespace()).state_dir
    ident = read_identity()
    live = {s.name for s in LivepatchSysfs().states() if s.enabled}
    try:
        current = state.read(state_dir)
    except AgentStateError as e:
        out.warning(f"{e.message}; showing the plain release")
        current = state.AgentState()
    release = state.effective_release(ident.release, ident.build_id, current, live)
    u = os.uname()
    if args.all:
        text = f"{u.sysname} {u.nodename} {release} {u.version} {u.machine} GNU/Linux"
    else:
        text = release if args.kernel_release else u.sysname
    data = {
        "format": 1,
        "sysname": u.sysname,
        "nodename": u.nodename,
        "release": ident.release,
        "effective_release": release,
        "level": current.live_level(ident.release, ident.build_id, live),
        "version": u.version,
        "machine": u.machine,
    }
    out.result(data, text)
    return 0
