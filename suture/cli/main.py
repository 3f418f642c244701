"""``suture``: the one command. Parse, call one library function, print, map errors to exit codes.

Every exit code is in :data:`suture.cli.helptext.EXIT_STATUS` (and README.md):
an error exits with its class's ``exit_code``; the agent's commands exit by
their outcome (:func:`suture.agent.outcome.exit_code`); a bad command line
exits 64, everywhere; an internal error (a bug) 10; an interrupt 130; a
closed stdout 141, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from suture import __version__
from suture.cli import (
    agent_cmds,
    build_cmds,
    docs_cmds,
    fleet_cmds,
    helptext,
    kernel_cmds,
    lab_cmds,
    logs,
    release_cmds,
    repo_cmds,
    serve_cmds,
    tester_cmds,
)
from suture.cli.output import Output
from suture.errors import InternalError, SutureError, UsageError

log = logging.getLogger("suture.cli")

EXIT_USAGE = 64
EXIT_INTERRUPTED = 130
EXIT_CLOSED_STDOUT = 141  # 128 + SIGPIPE, what a shell reports for a tool killed by it

REGISTER = (
    kernel_cmds, build_cmds, release_cmds, tester_cmds, lab_cmds, repo_cmds, agent_cmds,
    serve_cmds, fleet_cmds, docs_cmds,
)  # fmt: skip

DESCRIPTION = """\
Rebootless live patching for Linux fleets: a fix to the kernel is built into a
live patch for one exact kernel build, tested, signed into a repository, and
applied on every host that runs that build, without a reboot.

On a host: 'suture update' (or the suture-agent service) applies the newest
level; 'suture status' shows what is live. 'suture COMMAND --help' says more.
"""


class ArgumentUsageError(Exception):
    """The command line is wrong (raised instead of argparse's exit 2)."""

    def __init__(self, message: str, parser: argparse.ArgumentParser) -> None:
        super().__init__(message)
        self.parser = parser


class Parser(argparse.ArgumentParser):
    """argparse with usage errors that exit 64 (not 2) and speak JSON under ``--json``."""

    json_requested = False  # set from the command line before parsing (``--version``)

    def error(self, message: str) -> NoReturn:
        """Raise instead of printing and exiting: main() says it, and exits 64."""
        raise ArgumentUsageError(message, self)


class _Discard:
    """Takes every parser call and keeps nothing: the commands that were not asked for.

    Building all the sub-parsers costs ~25 ms, a sixth of an agent run's CPU
    (bench/update.py); only the command on the command line is built for real.
    """

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self


class _OneCommand:
    """The sub-parsers action, for one command only."""

    def __init__(self, subs: Any, wanted: str) -> None:
        self._subs = subs
        self._wanted = wanted

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if name == self._wanted:
            return self._subs.add_parser(name, **kwargs)
        return _Discard()


class _Version(argparse.Action):
    """``--version``: the version, as JSON under ``--json``."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
        if getattr(parser, "json_requested", False):
            Output(json_mode=True).document({"format": 1, "ok": True, "version": __version__})
        else:
            print(f"suture {__version__}", flush=True)
        parser.exit(0)


def common_options() -> argparse.ArgumentParser:
    """The options every command takes, before or after its name."""
    common = argparse.ArgumentParser(add_help=False)
    out = common.add_argument_group("output")
    out.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print one JSON document (with a format version) on stdout, errors too",
    )
    out.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log only warnings and errors on stderr",
    )
    out.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log details too (and the traceback of an internal error)",
    )
    return common


def build_parser(argv: Sequence[str] | None = None) -> Parser:
    """The parser; with ``argv``, only the named command's sub-parser is built."""
    common = common_options()
    parser = Parser(
        prog="suture",
        description=DESCRIPTION,
        epilog=helptext.epilog(
            [
                ("suture status", "the kernel, its live patches and the agent's level"),
                ("suture update --now", "apply the newest level for this kernel build now"),
                ("suture build fix.patch --cve CVE-2026-1234", "a live patch from a source fix"),
            ],
            sorted(helptext.EXIT_STATUS),
        ),
        formatter_class=helptext.Formatter,
        parents=[common],
    )
    parser.add_argument(
        "--version", action=_Version, nargs=0, help="print the version (JSON under --json)"
    )
    subs: Any = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    command = next((a for a in argv or () if not a.startswith("-")), None)
    if command is not None and "-h" not in (argv or ()) and "--help" not in (argv or ()):
        subs = _OneCommand(subs, command)
    for module in REGISTER:
        module.register(subs, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 - one exit per way out
    """Run the CLI; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    json_mode = _flag(argv, "--json")
    out = Output(json_mode=json_mode)
    logs.setup(-1 if _flag(argv, "-q", "--quiet") else 1 if _flag(argv, "-v", "--verbose") else 0)
    try:
        args = _parse(argv)
        if args is None:
            return 0  # --help or --version said it
        return int(args.handler(args, out))
    except ArgumentUsageError as e:
        return _usage(e, out)
    except SutureError as e:
        out.error(e)
        return e.exit_code
    except KeyboardInterrupt:
        log.warning("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _stdout_closed()
    except Exception as e:  # a bug: say so in one line; the traceback only with --verbose
        log.debug("internal error", exc_info=True)
        try:
            out.error(
                InternalError(
                    f"internal error: {type(e).__name__}: {e}",
                    hint="this is a Suture bug; run again with --verbose for the traceback "
                    "and report it",
                )
            )
        except BrokenPipeError:
            return _stdout_closed()
        return InternalError.exit_code


def _parse(argv: list[str]) -> argparse.Namespace | None:
    parser = build_parser(argv)
    if getattr(parser, "_subparsers", None) and not _known(parser, argv):
        parser = build_parser()  # not a command: the full parser says so, and lists them
    parser.json_requested = _flag(argv, "--json")
    try:
        return parser.parse_args(argv)
    except SystemExit as e:  # --help and --version print, then exit 0
        if e.code not in (0, None):
            raise
        sys.stdout.flush()
        return None


def _usage(e: ArgumentUsageError, out: Output) -> int:
    """A usage error: the usage line and what is wrong; a JSON error under --json; exit 64."""
    error = UsageError(e.args[0], hint=f"see '{e.parser.prog} --help'")
    sys.stderr.write(e.parser.format_usage())
    out.error(error)
    return EXIT_USAGE


def _stdout_closed() -> int:
    """The reader of stdout went away: say nothing more there, exit as if by SIGPIPE."""
    # Python flushes stdout again at exit, which would fail (and print) once more.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_CLOSED_STDOUT


def _flag(argv: Sequence[str], *names: str) -> bool:
    """True when an option is given (before ``--``: what follows belongs to a guest command)."""
    end = argv.index("--") if "--" in argv else len(argv)
    return any(a in names for a in argv[:end])


def _known(parser: argparse.ArgumentParser, argv: Sequence[str]) -> bool:
    """True when the parser built for ``argv``'s command has that command."""
    command = next((a for a in argv if not a.startswith("-")), None)
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        if isinstance(action, argparse._SubParsersAction):
            return command in action.choices
    return False


if __name__ == "__main__":
    sys.exit(main())
