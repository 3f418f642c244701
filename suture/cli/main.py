"""``suture``: the one command. Parse, call one library function, print, map errors to exit codes.

Exit codes (also in README.md):
    0   success (update/info: up to date or applied)
    1   update/info: no patches for this kernel build
    2   update/info: an update is pending
    3   build: the fix changes no code in this kernel build (nothing to patch), or
        its source has the fix already (JSON error AlreadyFixedError: fixed in this build);
        update/info: no livepatch support
    (``lab run`` passes the guest command's own status through)
    10  other Suture error
    20  lab: fetching a kernel or its source failed (build too: the exact source is
        gone from the archive), or running a guest failed
    30  kernel: talking to the running kernel failed
    31  pre-flight refused the patch (nothing loaded)
    32  the kernel refused to load or remove the module
    33  the transition did not finish and was backed out
    34  no such live patch
    35  userspace: patching a process failed (it runs its old code); 36 process refused;
        37 old code differs (another build); 38 a thread stayed in replaced code (untouched);
        39 apply/unload: some processes were left out (the list says why)
    40  build failed or refused (the message says why and what to do); the fix does not
        apply to the build's source (JSON error PortConflictError, with the hunk)
    50  bad bundle; 60-61 repository; 70-72 update (fetch, verification)
    62  publish: the bundle has no passing `suture test` on its own build (or give --untested)
    90  test: a bundle could not be tested (not for its kernel build)
    91  test: a bundle failed its test (the result is written into its manifest)
    4   update/status/boot: the crash-loop guard holds a level (status: or the last check failed)
    80  serve: cannot listen, database, TLS or signing key unusable, workers keep dying;
    81  fleet API call (cannot reach the server, or refused: 401 403 404 409 429)
    64  bad command line or input (serve: a bad --config, a shared or short admin token)
    130 interrupted
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from suture import __version__
from suture.cli import (
    agent_cmds,
    build_cmds,
    fleet_cmds,
    kernel_cmds,
    lab_cmds,
    release_cmds,
    repo_cmds,
    serve_cmds,
    tester_cmds,
)
from suture.cli.output import Output
from suture.errors import SutureError

Handler = Callable[[argparse.Namespace, Output], int]


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


def _parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only the named command's sub-parser is built."""
    # --json is accepted before and after the sub-command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON on stdout"
    )
    parser = argparse.ArgumentParser(
        prog="suture",
        description="Rebootless live patching for Linux fleets.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"suture {__version__}")
    subs: Any = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    command = next((a for a in argv or () if not a.startswith("-")), None)
    if command is not None and "-h" not in (argv or ()) and "--help" not in (argv or ()):
        subs = _OneCommand(subs, command)
    kernel_cmds.register(subs, common)
    build_cmds.register(subs, common)
    release_cmds.register(subs, common)
    tester_cmds.register(subs, common)
    lab_cmds.register(subs, common)
    repo_cmds.register(subs, common)
    agent_cmds.register(subs, common)
    serve_cmds.register(subs, common)
    fleet_cmds.register(subs, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser(argv)
    if getattr(parser, "_subparsers", None) and not _known(parser, argv):
        parser = _parser()  # not a command: the full parser says so, and lists them
    args = parser.parse_args(argv)
    out = Output(json_mode=getattr(args, "json", False))
    handler: Handler = args.handler
    try:
        return handler(args, out)
    except SutureError as e:
        out.error(e)
        return e.exit_code
    except KeyboardInterrupt:
        out.message("interrupted")
        return 130


def _known(parser: argparse.ArgumentParser, argv: Sequence[str]) -> bool:
    """True when the parser built for ``argv``'s command has that command."""
    command = next((a for a in argv if not a.startswith("-")), None)
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        if isinstance(action, argparse._SubParsersAction):
            return command in action.choices
    return False


if __name__ == "__main__":
    sys.exit(main())
