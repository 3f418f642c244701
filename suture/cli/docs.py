"""The man page and the shell completion, generated from the parser (nothing written twice).

``suture docs man`` prints ``suture(1)`` in troff; ``suture docs completion``
prints a bash completion script. ``scripts/package.sh`` puts both into the
Debian packages; a test checks that every command and option appears.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass

from suture import __version__
from suture.cli import helptext

FILES = (
    ("/etc/suture/agent.toml", "the agent's configuration (every key optional)"),
    ("/etc/suture/root.json", "the repository's trusted root, installed out of band"),
    ("/var/lib/suture/", "the agent's state, the live level's cached bundle, trusted metadata"),
)
ENVIRONMENT = (
    ("SUTURE_AGENT_CONFIG", "another agent configuration file than /etc/suture/agent.toml"),
    ("SUTURE_SERVER, SUTURE_CHANNEL, SUTURE_STATE_DIR, SUTURE_TRUSTED_ROOT, "
     "SUTURE_REGISTRATION_KEY", "agent settings over the configuration file"),
    ("SUTURE_FLEET_SERVER, SUTURE_ADMIN_TOKEN", "suture fleet: the server and the admin token"),
    ("SUTURE_CACHE, SUTURE_CACHE_MAX", "where kernels, sources and trees are cached, and how much"),
    ("JOURNAL_STREAM", "set by systemd: log lines carry their syslog priority for the journal"),
)  # fmt: skip


@dataclass(frozen=True)
class Command:
    """One command of the tree: its words (``fleet rollout halt``) and its parser."""

    words: tuple[str, ...]
    parser: argparse.ArgumentParser
    summary: str

    @property
    def name(self) -> str:
        """``suture fleet rollout halt``."""
        return " ".join(("suture", *self.words))


def commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> Iterator[Command]:
    """Every command under ``parser``, depth first, with the one-line summary it is listed with."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield Command((*words, name), sub, summaries.get(name, ""))
                yield from commands(sub, (*words, name))


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's options and positional arguments, without the sub-command slot and -h."""
    return [
        a
        for a in parser._actions
        if not isinstance(a, argparse._SubParsersAction | argparse._HelpAction)
    ]


def _spec(action: argparse.Action) -> str:
    if not action.option_strings:
        return str(action.metavar or action.dest).upper()
    value = ""
    if action.nargs != 0:
        value = " " + str(action.metavar or action.dest.upper())
    return ", ".join(action.option_strings) + value


def _roff(text: str) -> str:
    """Text safe in troff: backslashes, leading dots and quotes, dashes."""
    lines = []
    for raw in text.replace("\\", "\\e").split("\n"):
        guarded = "\\&" + raw if raw.startswith((".", "'")) else raw
        lines.append(guarded.replace("-", "\\-"))
    return "\n".join(lines)


def manpage(parser: argparse.ArgumentParser) -> str:
    """``suture(1)`` in troff (man macros), from the full parser."""
    out = [
        f'.TH SUTURE 1 "" "suture {__version__}" "User Commands"',
        ".SH NAME",
        "suture \\- rebootless live patching for Linux fleets",
        ".SH SYNOPSIS",
        ".B suture",
        "[\\fB\\-\\-json\\fR] [\\fB\\-q\\fR|\\fB\\-v\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        _roff(parser.description or ""),
        ".SH OPTIONS",
    ]
    for action in options(parser):
        out += [".TP", f"\\fB{_roff(_spec(action))}\\fR", _roff(action.help or "")]
    out.append(".SH COMMANDS")
    for cmd in commands(parser):
        out += [".SS " + _roff(cmd.name), _roff(cmd.summary), ".PP"]
        if cmd.parser.description:
            out += [_roff(cmd.parser.description), ".PP"]
        out += [".nf", _roff(cmd.parser.format_usage().strip()), ".fi"]
        for action in options(cmd.parser):
            if action.help == argparse.SUPPRESS:
                continue
            out += [".TP", f"\\fB{_roff(_spec(action))}\\fR", _roff(action.help or "")]
        if cmd.parser.epilog:
            out += [".PP", ".nf", _roff(cmd.parser.epilog), ".fi"]
    out.append(".SH EXIT STATUS")
    for code, meaning in sorted(helptext.EXIT_STATUS.items()):
        out += [".TP", f"\\fB{code}\\fR", _roff(meaning)]
    out.append(".SH ENVIRONMENT")
    for name, meaning in ENVIRONMENT:
        out += [".TP", f"\\fB{_roff(name)}\\fR", _roff(meaning)]
    out.append(".SH FILES")
    for name, meaning in FILES:
        out += [".TP", f"\\fI{_roff(name)}\\fR", _roff(meaning)]
    out += [".SH SEE ALSO", "systemctl(1), journalctl(1); README.md and docs/adr/ of the source"]
    return "\n".join(out) + "\n"


def completion(parser: argparse.ArgumentParser) -> str:
    """A bash completion script for ``suture``: commands at each depth, then their options."""
    level: dict[tuple[str, ...], list[str]] = {(): _words(parser)}
    for cmd in commands(parser):
        level[cmd.words] = _words(cmd.parser)
    paths = " ".join("/".join(words) for words in level if words)
    cases = "\n".join(
        f'        "{"/".join(words)}") words="{" ".join(found)}" ;;'
        for words, found in level.items()
    )
    return f"""# bash completion for suture, generated by 'suture docs completion'
_suture_paths=" {paths} "
_suture() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" path="" next i words
    for ((i = 1; i < COMP_CWORD; i++)); do
        next="${{path:+$path/}}${{COMP_WORDS[i]}}"
        case "$_suture_paths" in *" $next "*) path="$next" ;; esac
    done
    case "$path" in
{cases}
        *) words="" ;;
    esac
    mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")
}}
complete -o default -F _suture suture
"""


def _words(parser: argparse.ArgumentParser) -> list[str]:
    """The sub-commands first (what a user wants next), then the long options."""
    commands: list[str] = []
    flags: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            commands += list(action.choices)
        else:
            flags += [o for o in action.option_strings if o.startswith("--")]
    return commands + flags
