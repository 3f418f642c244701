"""``suture docs man`` and ``suture docs completion``: documents generated from the parser."""

from __future__ import annotations

import argparse
from typing import Any

from suture.cli.helptext import command, group
from suture.cli.output import Output


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    """Add ``docs`` and its sub-commands."""
    _, inner = group(
        subs,
        "docs",
        common,
        summary="the man page and shell completion, generated from the commands themselves",
        description="Print suture(1) or a bash completion script. Both are made from the same "
        "parser as every --help, so they never disagree with it; the Debian packages install "
        "them.",
    )
    p = command(
        inner,
        "man",
        common,
        summary="print the man page suture(1) in troff",
        description="The whole command line: every command with its description, options, "
        "examples and exit status, then the environment and files.",
        examples=[
            ("suture docs man | man -l -", "read it"),
            ("suture docs man | gzip -9 > suture.1.gz", "what a package installs"),
        ],
    )
    p.set_defaults(handler=cmd_man)
    p = command(
        inner,
        "completion",
        common,
        summary="print a bash completion script",
        description="Completes commands at each depth, then the options of the command.",
        examples=[
            (
                "suture docs completion > /etc/bash_completion.d/suture",
                "install it for every user (the Debian package does)",
            ),
            ("source <(suture docs completion)", "try it in this shell"),
        ],
    )
    p.set_defaults(handler=cmd_completion)


def _full_parser() -> argparse.ArgumentParser:
    from suture.cli.main import build_parser

    return build_parser()


def cmd_man(args: argparse.Namespace, out: Output) -> int:
    """Print the man page."""
    from suture.cli import docs

    text = docs.manpage(_full_parser())
    out.result({"format": 1, "ok": True, "man": text}, text.rstrip("\n"))
    return 0


def cmd_completion(args: argparse.Namespace, out: Output) -> int:
    """Print the bash completion script."""
    from suture.cli import docs

    text = docs.completion(_full_parser())
    out.result({"format": 1, "ok": True, "bash": text}, text.rstrip("\n"))
    return 0
