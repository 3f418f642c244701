"""Judge the kernel log and taint of a test: what counts as the kernel going wrong.

The log is read with ``dmesg`` from the start of a bundle's test (the runner
clears it first) to its end. Any of :data:`PROBLEMS` fails the test, and so
does a taint flag other than those that loading a live patch sets itself.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

# (kind, pattern): kernel messages that mean something went wrong.
PROBLEMS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("oops", re.compile(r"\bOops\b|general protection fault|kernel BUG at|Unable to handle")),
    ("bug", re.compile(r"\bBUG:")),
    ("warning", re.compile(r"\bWARNING:")),
    ("rcu stall", re.compile(r"rcu.*detected stall|rcu_\w+ kthread starved")),
    (
        "lockdep",
        re.compile(
            r"possible (circular|recursive) locking|inconsistent lock state"
            r"|suspicious RCU usage|lock held when returning to user space"
        ),
    ),
    ("hung task", re.compile(r"blocked for more than \d+ seconds")),
    ("livepatch failure", re.compile(r"livepatch: .*\b(fail|failed|error)\b", re.IGNORECASE)),
    ("stack dump", re.compile(r"Call Trace:")),
    ("sanitizer", re.compile(r"\b(UBSAN|KASAN|KFENCE|KCSAN):")),
)
# Lines kept in the test record besides the problems: what the livepatch core did.
NOTABLE = re.compile(r"livepatch|taint", re.IGNORECASE)
# The taint a live patch sets by loading: K (livepatch), O (out-of-tree), E (unsigned).
ALLOWED_TAINT = frozenset("KOE")
MAX_LINES = 40  # kept in the record; the whole log's digest covers the rest
MAX_LINE = 300  # characters


@dataclass(frozen=True)
class Verdict:
    """What the kernel log and taint of one test say.

    Attributes:
        sha256: digest of the whole log, as read.
        lines: the problems first, then the notable lines, at most ``MAX_LINES``.
        problems: one "kind: line" per problem found (empty: clean).
        taint: the taint letters at the end.
    """

    sha256: str
    lines: tuple[str, ...]
    problems: tuple[str, ...]
    taint: str

    @property
    def clean(self) -> bool:
        """True when nothing went wrong."""
        return not self.problems


def judge(log: str, taint: str) -> Verdict:
    """Judge a test's kernel log and the kernel's taint letters at its end (e.g. ``OEK``)."""
    problems: list[str] = []
    problem_lines: list[str] = []
    notable: list[str] = []
    for line in log.splitlines():
        kinds = [kind for kind, pattern in PROBLEMS if pattern.search(line)]
        if kinds:
            problems.append(f"{kinds[0]}: {line.strip()[:MAX_LINE]}")
            problem_lines.append(line[:MAX_LINE])
        elif NOTABLE.search(line):
            notable.append(line[:MAX_LINE])
    unexpected = "".join(c for c in taint if c not in ALLOWED_TAINT)
    if unexpected:
        problems.append(f"taint: the kernel is tainted {taint} ({unexpected} is not from loading)")
    return Verdict(
        sha256=hashlib.sha256(log.encode()).hexdigest(),
        lines=tuple((problem_lines + notable)[:MAX_LINES]),
        problems=tuple(problems),
        taint=taint,
    )
