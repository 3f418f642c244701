"""The source fix: its commits, the files they change, and how they move lines.

A fix is a unified diff (``diff -u``, ``git diff``), or ``git format-patch``
output: one mail, or an mbox of several, whose commits apply in order. The
mail headers give each commit's subject, author and date; the subject and
the commit text give the CVE ids it fixes.

The line map lets the differ recognise ``__LINE__`` immediates: a constant
that changed from ``L`` to exactly where the fix moved line ``L`` is a line
number, not a change of behaviour. For a file that several commits change,
the maps of the commits compose.
"""

from __future__ import annotations

import bisect
import email
import email.policy
import re
from dataclasses import dataclass, field
from email.message import EmailMessage, Message

from suture.errors import BuildError

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_CVE = re.compile(r"\bCVE-\d{4}-\d{4,}\b", re.IGNORECASE)
# The line mbox puts before each mail: "From <commit or address> <asctime date>".
# format-patch writes "From <sha> Mon Sep 17 00:00:00 2001". A line of a commit
# message that starts with "From " has no such date, and diff lines never start so.
_MBOX_FROM = re.compile(
    r"^From \S+ +\w{3} \w{3} +\d{1,2} \d\d:\d\d:\d\d(?: \d{4})?\s*$", re.MULTILINE
)
_HEADER_LINE = re.compile(r"^[A-Za-z][\w-]*:")
# What format-patch and mailers put before the subject proper: [PATCH v2 1/3], Re:.
_SUBJECT_TAGS = re.compile(r"^(?:\s*(?:\[[^\]]*\]|re:|fwd?:))+\s*", re.IGNORECASE)


@dataclass
class LineMap:
    """Old line number -> new line number for one file of the fix."""

    # Old lines inside hunks that survive (context), mapped exactly.
    exact: dict[int, int] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)
    # From old line starts[i] on (up to the next start), lines shift by deltas[i].
    starts: list[int] = field(default_factory=list)
    deltas: list[int] = field(default_factory=list)
    # Maps of later commits that change the same file, applied in order after this one.
    later: tuple[LineMap, ...] = ()

    def new_line(self, old: int) -> int | None:
        """Where old line ``old`` is after the fix (None: the fix removed it)."""
        line: int | None = self._own(old)
        for step in self.later:
            if line is None:
                return None
            line = step.new_line(line)
        return line

    def then(self, later: LineMap) -> LineMap:
        """This map followed by ``later`` (a map of the file as this one leaves it)."""
        return LineMap(self.exact, self.removed, self.starts, self.deltas, (*self.later, later))

    def _own(self, old: int) -> int | None:
        if old in self.exact:
            return self.exact[old]
        if old in self.removed:
            return None
        i = bisect.bisect_right(self.starts, old) - 1
        return old + (self.deltas[i] if i >= 0 else 0)


@dataclass(frozen=True)
class Hunk:
    """One ``@@`` hunk of a file's diff."""

    old_start: int
    old_count: int
    new_start: int
    new_count: int
    text: str  # the "@@" line and the hunk's lines, as in the fix


@dataclass(frozen=True)
class FileDiff:
    """What one commit does to one file."""

    path: str  # in the tree, e.g. fs/proc/cmdline.c
    hunks: tuple[Hunk, ...]
    lines: LineMap
    created: bool = False  # the commit adds the file (``--- /dev/null``)

    @property
    def text(self) -> str:
        """This file's diff, for GNU patch ``-p1``."""
        old = "/dev/null" if self.created else f"a/{self.path}"
        return f"--- {old}\n+++ b/{self.path}\n" + "".join(h.text for h in self.hunks)


@dataclass(frozen=True)
class Commit:
    """One commit of a fix (a plain diff is one commit without a subject)."""

    subject: str
    author: str
    date: str
    message: str  # the commit text after the subject
    cves: tuple[str, ...]
    files: tuple[FileDiff, ...]

    @property
    def diff(self) -> str:
        """The commit's changes as one unified diff, for GNU patch ``-p1``."""
        return "".join(f.text for f in self.files)


@dataclass
class Fix:
    """A parsed fix: its commits in order, and the files the whole fix touches."""

    text: str
    files: dict[str, LineMap]  # every touched file -> its line map through all commits
    commits: tuple[Commit, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Fix:
        """Parse a unified diff, or ``git format-patch``/mbox output of one or more commits.

        Raises:
            BuildError: no diff in it, a malformed hunk, or a file deleted or renamed.
        """
        mails = _mails(text)
        if mails is None:
            preamble = text[: _diff_start(text)]
            commits = [_commit("", "", "", preamble, text)]
        else:
            # A mail without a diff (a cover letter) is no commit of the fix.
            commits = [c for c in map(_mail_commit, mails) if c.files]
        files: dict[str, LineMap] = {}
        for commit in commits:
            for fd in commit.files:
                files[fd.path] = files[fd.path].then(fd.lines) if fd.path in files else fd.lines
        if not files:
            raise BuildError(
                "the fix is not a unified diff (no '+++' lines)",
                hint="make it with diff -u, git diff or git format-patch",
            )
        return cls(text, files, tuple(commits))

    @property
    def cves(self) -> tuple[str, ...]:
        """The CVE ids its commits name, in order, each once."""
        return tuple(dict.fromkeys(c for commit in self.commits for c in commit.cves))

    @property
    def description(self) -> str:
        """The commits' subjects, "" for a plain diff."""
        return "; ".join(c.subject for c in self.commits if c.subject)

    @property
    def headers(self) -> list[str]:
        """The headers the fix changes."""
        return sorted(f for f in self.files if f.endswith(".h"))

    @property
    def sources(self) -> list[str]:
        """The C files the fix changes."""
        return sorted(f for f in self.files if f.endswith(".c"))

    def line_maps(self, source: str) -> list[LineMap]:
        """How the fix moves the lines a unit's code comes from: its own, then its headers'."""
        own = [self.files[source]] if source in self.files else []
        return own + [self.files[h] for h in self.headers]


def require_c_files(fix: Fix) -> None:
    """Refuse a fix that changes anything but C files and headers.

    Raises:
        BuildError: names the files that are neither.
    """
    unsupported = sorted(p for p in fix.files if not p.endswith((".c", ".h")))
    if unsupported:
        raise BuildError(
            f"the fix changes {', '.join(unsupported)}: only C files and headers can be "
            "live patched (build files, assembly and configuration need a new kernel)",
            hint="leave those changes out if the C change stands on its own",
        )


def cve_ids(text: str) -> tuple[str, ...]:
    """The CVE ids named in ``text``, upper case, in order, each once."""
    return tuple(dict.fromkeys(m.upper() for m in _CVE.findall(text)))


def _mails(text: str) -> list[EmailMessage] | None:
    """The mails of an mbox or of one mail; None for a plain diff."""
    starts = [m.start() for m in _MBOX_FROM.finditer(text)]
    if starts and not text[: starts[0]].strip():
        chunks = [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]
        # Each chunk less its "From " line; bytes so that 8-bit bodies decode as declared.
        return [_message(c.split("\n", 1)[1] if "\n" in c else "") for c in chunks]
    if _HEADER_LINE.match(text):
        msg = _message(text)
        if "Subject" in msg:
            return [msg]
    return None


def _message(text: str) -> EmailMessage:
    raw = text.encode("utf-8", "surrogateescape")
    return email.message_from_bytes(raw, policy=email.policy.default)


def _mail_commit(msg: EmailMessage) -> Commit:
    body = "".join(_text(part) for part in msg.walk() if not part.is_multipart())
    subject = _SUBJECT_TAGS.sub("", " ".join(str(msg.get("Subject", "")).split()))
    start = _diff_start(body)
    message = body[:start]
    # format-patch ends the commit text with a "---" line (the diffstat follows).
    cut = re.search(r"^---\s*$", message, re.MULTILINE)
    message = message[: cut.start()] if cut else message
    return _commit(
        subject, str(msg.get("From", "")), str(msg.get("Date", "")), message, body[start:]
    )


def _text(part: Message) -> str:
    if part.get_content_maintype() != "text":
        return ""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = (part.get_content_charset() or "utf-8").lower()
    if charset in {"utf-8", "utf8", "us-ascii", "ascii"}:
        # surrogateescape: bytes of a source file that are not UTF-8 survive to patch
        return payload.decode("utf-8", "surrogateescape")
    return payload.decode(charset, "replace")


def _commit(subject: str, author: str, date: str, message: str, diff: str) -> Commit:
    message = message.strip()
    cves = cve_ids(f"{subject}\n{message}")
    return Commit(subject, author, date, message, cves, _parse_diff(diff))


def _diff_start(text: str) -> int:
    """Where the diff begins in a commit text (its length when there is none)."""
    match = re.search(r"^(?:diff |Index: |--- .*\n\+\+\+ )", text, re.MULTILINE)
    return match.start() if match else len(text)


def _parse_diff(text: str) -> tuple[FileDiff, ...]:
    # Not splitlines(): it would also break lines at form feeds, which kernel sources hold.
    lines = text.split("\n")
    files: list[FileDiff] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            old, new = lines[i][4:], lines[i + 1][4:]
            i += 2
            hunks: list[Hunk] = []
            while i < len(lines) and (match := _HUNK.match(lines[i])):
                hunk, i = _parse_hunk(match, lines, i)
                hunks.append(hunk)
            files.append(_file_diff(old, new, hunks))
        else:
            i += 1
    return tuple(files)


def _parse_hunk(match: re.Match[str], lines: list[str], i: int) -> tuple[Hunk, int]:
    """The hunk whose ``@@`` line ``lines[i]`` is ``match``, and the index after it."""
    old_start, new_start = int(match.group(1)), int(match.group(3))
    old_count = int(match.group(2)) if match.group(2) is not None else 1
    new_count = int(match.group(4)) if match.group(4) is not None else 1
    body = [lines[i]]
    i += 1
    old_left, new_left = old_count, new_count
    while i < len(lines) and (old_left > 0 or new_left > 0 or lines[i].startswith("\\")):
        line = lines[i]
        kind = line[:1]
        if kind == " " or (not line and i + 1 < len(lines)):
            # (an empty line: context whose one space a mailer dropped)
            old_left, new_left = old_left - 1, new_left - 1
        elif kind == "-":
            old_left -= 1
        elif kind == "+":
            new_left -= 1
        elif kind != "\\":  # "\ No newline at end of file"
            break
        body.append(line or " ")
        i += 1
    if old_left or new_left:
        raise BuildError(
            f"the fix has a malformed hunk: {body[0]} does not match its lines",
            hint="a mailer or editor may have changed the patch; make it again with git",
        )
    return Hunk(old_start, old_count, new_start, new_count, "\n".join(body) + "\n"), i


def _file_diff(old: str, new: str, hunks: list[Hunk]) -> FileDiff:
    path = _tree_path(new)
    created = old.split("\t", 1)[0].strip() == "/dev/null"
    if not created and _tree_path(old) != path:
        raise BuildError(
            f"the fix renames {_tree_path(old)} to {path}; live patches cannot rename files"
        )
    lm = LineMap()
    for hunk in hunks:
        # "-N,0" means after old line N: the hunk's first old line would be N + 1.
        old_line = hunk.old_start + (1 if hunk.old_count == 0 else 0)
        new_line = hunk.new_start + (1 if hunk.new_count == 0 else 0)
        for line in hunk.text.split("\n")[1:]:
            if line[:1] in {" ", "-", "+"}:
                old_line, new_line = _step(lm, line[:1], old_line, new_line)
    return FileDiff(path, tuple(hunks), lm, created)


def _step(lm: LineMap, kind: str, old: int, new: int) -> tuple[int, int]:
    if kind == " ":
        lm.exact[old] = new
        old, new = old + 1, new + 1
    elif kind == "-":
        lm.removed.add(old)
        old += 1
    else:
        new += 1
    # Lines from the next old one on (outside any later hunk) keep this shift.
    if lm.starts and lm.starts[-1] == old:
        lm.deltas[-1] = new - old
    elif not lm.deltas or lm.deltas[-1] != new - old:
        lm.starts.append(old)
        lm.deltas.append(new - old)
    return old, new


def _tree_path(target: str) -> str:
    target = target.split("\t", 1)[0].strip()
    if target == "/dev/null":
        raise BuildError("the fix deletes a file; live patches cannot remove code units")
    return target.split("/", 1)[1] if "/" in target else target
