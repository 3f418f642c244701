"""The fixes of a release: files as given, and the one series a cumulative level is built from.

A fix file is a unified diff or a ``git format-patch``/mbox of one or more
commits; it is known by the sha256 of its bytes. A cumulative level is built
from every fix released so far for that build and channel, in the order they
were released: their commits are put into one mbox, plain diffs as mails of
their own, so that the builder applies them one after the other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from suture.builder.fix import Fix
from suture.bundle import FixRecord
from suture.errors import UsageError


@dataclass(frozen=True)
class FixFile:
    """One fix, as given."""

    name: str  # the file's name, for people
    data: bytes

    @property
    def sha256(self) -> str:
        """What the fix is known by, in manifests and in the repository."""
        return hashlib.sha256(self.data).hexdigest()

    def parsed(self) -> Fix:
        """The fix's commits and files (surrogateescape: bytes reach patch unchanged)."""
        return Fix.parse(self.data.decode("utf-8", "surrogateescape"))

    def record(self, cves: tuple[str, ...] = ()) -> FixRecord:
        """Its entry in a level's manifest; ``cves`` add to those the fix names itself."""
        fix = self.parsed()
        subject = fix.description or self.name
        return FixRecord(self.sha256, subject, tuple(dict.fromkeys((*fix.cves, *cves))))


def read_fixes(paths: list[Path]) -> list[FixFile]:
    """The fix files, each parsed once to refuse what is no fix before any work.

    Raises:
        UsageError: a file cannot be read, or two of them are the same fix.
        BuildError: a file is no diff (from the parser).
    """
    fixes: list[FixFile] = []
    for path in paths:
        try:
            fix = FixFile(path.name, path.read_bytes())
        except OSError as e:
            raise UsageError(f"cannot read {path}: {e.strerror}", hint="give fix files") from e
        fix.parsed()
        if any(f.sha256 == fix.sha256 for f in fixes):
            raise UsageError(f"{path} is given twice (the same bytes as another fix)")
        fixes.append(fix)
    return fixes


def as_series(fixes: list[FixFile]) -> bytes:
    """One mbox of every fix's commits, in order (a plain diff becomes a mail of its own)."""
    parts = []
    for i, fix in enumerate(fixes, 1):
        text = fix.data
        if fix.parsed().commits and fix.parsed().commits[0].subject:
            parts.append(text if text.endswith(b"\n") else text + b"\n")
            continue
        header = (
            f"From {i:040d} Mon Sep 17 00:00:00 2001\n"
            f"From: suture release <release@localhost>\n"
            f"Subject: [PATCH] {fix.name}\n\n"
        ).encode()
        parts.append(header + text + (b"" if text.endswith(b"\n") else b"\n"))
    return b"".join(parts)
