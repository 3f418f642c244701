"""Help that teaches: each command's description, examples and exit status, from one table.

Every command is added with :func:`command`, which writes its ``--help``
epilog: examples, then the exit codes it can end with, their meanings taken
from :data:`EXIT_STATUS` (the README's table). The man page and the shell
completion (:mod:`suture.cli.docs`) are generated from the same parser.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from typing import Any

# Every exit code of `suture`, as README.md's table says.
EXIT_STATUS: dict[int, str] = {
    0: "success (update/info/status: up to date, applied or removed; lab run: the command's "
    "own status)",
    1: "update/info/status: no live patches for this kernel build",
    2: "update/info/status: another level is pending (update delay, or info)",
    3: "the fix changes no code in this build, or the build has it already; "
    "update/info/status/boot: this kernel cannot be live patched",
    4: "the crash-loop guard holds a level; status: the last check failed",
    10: "another Suture error, or an internal error (a bug: the message says so)",
    20: "lab: a kernel or its source could not be fetched, or a guest failed",
    30: "the running kernel could not be read or driven (a refused write names its file)",
    31: "pre-flight or the patch's pre-match check refused the patch; nothing stays loaded",
    32: "the kernel refused to load or remove the module",
    33: "the transition did not finish and was backed out",
    34: "no such live patch (kernel, or a userspace patch no process runs)",
    35: "userspace: patching a process failed (it runs its old code)",
    36: "userspace: the process was refused (traced, Yama, PID 1, seccomp)",
    37: "userspace: the old code is not what the patch was built against (another build)",
    38: "userspace: a thread stayed in replaced code until the time limit (left untouched)",
    39: "userspace apply/unload: some processes were left out (each one's outcome is listed)",
    40: "the build failed or was refused; the fix does not apply to the build's source",
    42: "release, or build for several builds: some builds failed (the table says which)",
    50: "a bundle is malformed or does not match its manifest",
    60: "repository error",
    61: "the level is not above every level published for that build and channel",
    62: "publish: no passing 'suture test' on the bundle's own build (or give --untested)",
    70: "update error",
    71: "the repository could not be reached (refused, DNS, TLS, timeout): retry later",
    72: "verification failed (rollback, expired, signature, integrity, wrong build): "
    "alert, do not apply",
    80: "serve: cannot listen, database error, TLS or signing key unusable, workers keep dying",
    81: "fleet: the fleet server cannot be reached, or refused the call",
    90: "test: a bundle could not be tested",
    91: "test: a bundle failed its test",
    64: "bad command line, configuration or input (serve: a bad --config, a shared or short "
    "admin token)",
    130: "interrupted",
    141: "standard output was closed (a pipe reader went away)",
}
# Every command can end with these.
ALWAYS = (64, 130)


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's layout; wraps descriptions; shows defaults where help names none."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def command(
    subs: Any,
    name: str,
    common: argparse.ArgumentParser,
    *,
    summary: str,
    description: str,
    examples: Sequence[tuple[str, str]] = (),
    exits: Sequence[int] = (0,),
    parents: Sequence[argparse.ArgumentParser] = (),
) -> argparse.ArgumentParser:
    """Add the sub-command ``name`` with a description, examples and its exit codes.

    Args:
        subs: the sub-parsers action to add to.
        name: the command's name.
        common: the options every command takes (``--json``, ``--quiet``, ``--verbose``).
        summary: one line for the list of commands.
        description: what it does, for ``--help`` and the man page.
        examples: (command line, what it does).
        exits: the exit codes it ends with besides :data:`ALWAYS`.
        parents: further parent parsers (shared options).
    """
    return subs.add_parser(  # type: ignore[no-any-return]
        name,
        parents=[common, *parents],
        help=summary,
        description=_paragraphs(description),
        epilog=epilog(examples, exits),
        formatter_class=Formatter,
    )


def group(
    subs: Any, name: str, common: argparse.ArgumentParser, *, summary: str, description: str
) -> tuple[argparse.ArgumentParser, Any]:
    """Add a command that has sub-commands; returns it and its sub-parsers action."""
    parser = command(subs, name, common, summary=summary, description=description, exits=())
    inner = parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")
    return parser, inner


def epilog(examples: Sequence[tuple[str, str]], exits: Sequence[int]) -> str:
    """The examples and the exit status, as ``--help`` ends."""
    parts = []
    if examples:
        lines = ["examples:"]
        for line, what in examples:
            lines.append(f"  {line}")
            lines += textwrap.wrap(what, 92, initial_indent="      ", subsequent_indent="      ")
        parts.append("\n".join(lines))
    codes = sorted(set(exits) | set(ALWAYS))
    lines = ["exit status:"]
    for code in codes:
        lines += textwrap.wrap(
            EXIT_STATUS[code], 92, initial_indent=f"  {code:<4}", subsequent_indent="      "
        )
    parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _paragraphs(text: str) -> str:
    """Wrap each paragraph of ``text`` (blank-line separated) to the help's width."""
    return "\n\n".join(textwrap.fill(" ".join(p.split()), 92) for p in text.split("\n\n"))
