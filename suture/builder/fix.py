"""The source fix: which files a unified diff changes, and how it moves their lines.

The line map lets the differ recognise ``__LINE__`` immediates: a constant
that changed from ``L`` to exactly where the diff moved line ``L`` is a line
number, not a change of behaviour.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from suture.errors import BuildError

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass
class LineMap:
    """Old line number -> new line number for one file of the fix."""

    # Old lines inside hunks that survive (context), mapped exactly.
    exact: dict[int, int] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)
    # After the hunk ending at old line ends[i], lines shift by deltas[i].
    ends: list[int] = field(default_factory=list)
    deltas: list[int] = field(default_factory=list)

    def new_line(self, old: int) -> int | None:
        """Where old line ``old`` is after the fix (None: the fix removed it)."""
        if old in self.exact:
            return self.exact[old]
        if old in self.removed:
            return None
        i = bisect.bisect_right(self.ends, old) - 1
        return old + (self.deltas[i] if i >= 0 else 0)


@dataclass
class Fix:
    """A parsed unified diff."""

    text: str
    files: dict[str, LineMap]

    @classmethod
    def parse(cls, text: str) -> Fix:
        """Parse ``text``.

        Raises:
            BuildError: not a unified diff, a deleted file, or a file that is not .c.
        """
        files: dict[str, LineMap] = {}
        current: LineMap | None = None
        old = new = 0
        for line in text.splitlines():
            if line.startswith("+++ "):
                current = LineMap()
                files[_tree_path(line[4:])] = current
            elif (match := _HUNK.match(line)) and current is not None:
                old, new = int(match.group(1)), int(match.group(3))
            elif current is not None and old and line[:1] in (" ", "-", "+"):
                old, new = _step(current, line[:1], old, new)
        _check(files)
        return cls(text, files)

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


def _step(lm: LineMap, kind: str, old: int, new: int) -> tuple[int, int]:
    if kind == " ":
        lm.exact[old] = new
        old, new = old + 1, new + 1
    elif kind == "-":
        lm.removed.add(old)
        old += 1
    else:
        new += 1
    # Lines after this point (outside any later hunk) keep this shift.
    if lm.ends and lm.ends[-1] == old - 1:
        lm.deltas[-1] = new - old
    else:
        lm.ends.append(old - 1)
        lm.deltas.append(new - old)
    return old, new


def _tree_path(target: str) -> str:
    target = target.split("\t", 1)[0].strip()
    if target == "/dev/null":
        raise BuildError("the fix deletes a file; live patches cannot remove code units")
    return target.split("/", 1)[1] if "/" in target else target


def _check(files: dict[str, LineMap]) -> None:
    if not files:
        raise BuildError(
            "the fix is not a unified diff (no '+++' lines)",
            hint="make it with diff -u or git diff",
        )
    unsupported = sorted(p for p in files if not p.endswith((".c", ".h")))
    if unsupported:
        raise BuildError(
            f"the fix changes {', '.join(unsupported)}: only C files and headers can be "
            "live patched (build files, assembly and configuration need a new kernel)",
            hint="leave those changes out if the C change stands on its own",
        )
