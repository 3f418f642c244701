"""Porting a fix to one build's exact source: applies, moved, already there, or conflict.

A fix is written against one tree (upstream, a stable branch) and built for
another: a Debian build's exact ``linux-source``. Its commits are applied in
order with GNU patch to copies of the files they touch, never to the tree
itself, and exactly one outcome is reported:

- ``clean``: every hunk applied where the fix says;
- ``moved``: every hunk applied, some at an offset or with fuzz. The result
  is built, but the moved hunks are named so that someone reads them;
- ``contained``: the build's source already has the fix (fixed in this
  build): the whole fix reverse-applies exactly, newest commit first, or
  every hunk on its own does. Nothing to patch;
- ``conflict``: some hunk does not apply, or the fix is only partly in the
  build already (applying the rest with fuzz would duplicate what is there);
  the hunks are shown;
- ``source-gone``: decided by the caller before porting, when the build's
  exact source is no longer in the archive.

For ``clean`` and ``moved`` the result carries the build-exact diff (each
touched file as in the tree against the file after all commits), which the
compile step applies with ``patch -F0`` like any fix.
"""

from __future__ import annotations

import enum
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from suture.builder.fix import Commit, FileDiff, Fix
from suture.errors import AlreadyFixedError, BuildError, PortConflictError, SourceGoneError
from suture.fsutil import locked

# GNU patch's own default: up to two context lines at each end of a hunk may differ.
FUZZ = 2
# patch's messages are read below: in English, whatever the locale.
_ENV = {**os.environ, "LC_ALL": "C"}
_FILE = re.compile(r"^(?:patching|checking) file (.*)$")
_HUNK = re.compile(
    r"^Hunk #(\d+) (succeeded|FAILED|ignored|already applied) at -?\d+"
    r"(?: with fuzz (\d+))?(?: \(offset (-?\d+) lines?\))?"
)


class PortOutcome(enum.StrEnum):
    """What porting a fix to one build's source found."""

    CLEAN = "clean"  # applied where the fix says
    MOVED = "moved"  # applied, some hunks at an offset or with fuzz: built, flagged
    CONTAINED = "contained"  # fixed in this build: nothing to patch
    CONFLICT = "conflict"  # does not apply (or only partly there already)
    SOURCE_GONE = "source-gone"  # the build's exact source left the archive


@dataclass(frozen=True)
class HunkPlace:
    """One hunk of the fix, and how it went in this build's file."""

    file: str
    commit: int  # the commit's place in the fix, from 1
    hunk: int  # the hunk's number in that commit's diff of the file, from 1 (as patch counts)
    offset: int = 0  # lines from where the fix puts it
    fuzz: int = 0  # context lines at its ends that had to be ignored
    text: str = ""  # the hunk itself, for one that did not apply

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (``text`` only when there is one)."""
        out: dict[str, object] = {
            "file": self.file, "commit": self.commit, "hunk": self.hunk,
            "offset": self.offset, "fuzz": self.fuzz,
        }  # fmt: skip
        if self.text:
            out["text"] = self.text
        return out

    def where(self) -> str:
        """``fs/x.c, commit 1, hunk #2``."""
        return f"{self.file}, commit {self.commit}, hunk #{self.hunk}"


@dataclass(frozen=True)
class PortResult:
    """The outcome of porting a fix to one build, and the diff to build when it applies."""

    release: str
    outcome: PortOutcome
    diff: str = ""  # build-exact unified diff, for clean and moved ("" otherwise)
    moved: tuple[HunkPlace, ...] = ()  # applied at an offset or with fuzz
    failed: tuple[HunkPlace, ...] = ()  # did not apply
    present: tuple[HunkPlace, ...] = ()  # already in the build's source (conflict: partly)
    detail: str = ""  # one line for people

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form, without the diff."""
        return {
            "format": 1,
            "release": self.release,
            "outcome": str(self.outcome),
            "moved": [h.to_dict() for h in self.moved],
            "failed": [h.to_dict() for h in self.failed],
            "present": [h.to_dict() for h in self.present],
            "detail": self.detail,
        }


def source_gone(release: str, detail: str = "") -> PortResult:
    """The outcome for a build whose exact source is no longer in the archive."""
    return PortResult(
        release,
        PortOutcome.SOURCE_GONE,
        detail=detail or f"the exact source of {release} is no longer in the archive",
    )


def port(fix: Fix, root: Path, *, release: str = "") -> PortResult:
    """Apply ``fix``'s commits in order to copies of the files of the tree at ``root``.

    The tree is only read, under the lock compile.py holds while it patches
    a tree (``<root>/../.build.lock``), so a file is never copied half-patched.

    Args:
        fix: the parsed fix.
        root: the top of the build's source tree.
        release: the build, for the result and messages.

    Raises:
        BuildError: GNU patch could not run or could not read the fix.
    """
    commits = [(i, c) for i, c in enumerate(fix.commits, 1) if c.files]
    hunks = _every_hunk(commits)
    paths = sorted({h.fd.path for h in hunks})
    created = {h.fd.path for h in hunks if h.fd.created}
    missing = [p for p in paths if p not in created and not (root / p).is_file()]
    if missing:
        failed = tuple(
            replace(h.place, text=f"{h.fd.path} is not in this build's source\n")
            for h in hunks
            if h.fd.path in missing and h.place.hunk == 1
        )
        return PortResult(
            release, PortOutcome.CONFLICT, failed=failed,
            detail=f"{', '.join(missing)} not in the source of {release or 'this build'}",
        )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="suture-port-") as tmp:
        work = Path(tmp)
        with locked(root.parent / ".build.lock"):
            for path in paths:
                if (root / path).is_file():
                    (work / "tree" / path).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(root / path, work / "tree" / path)
        (work / "tree").mkdir(exist_ok=True)
        return _port_copies(commits, hunks, work, release)


def applied_diff(result: PortResult) -> str:
    """The build-exact diff of a fix that applies; errors for every other outcome.

    Raises:
        AlreadyFixedError: the build's source contains the fix.
        PortConflictError: the fix does not apply; the first failing hunk is shown.
        SourceGoneError: the build's exact source is no longer in the archive.
    """
    build = result.release or "this build"
    if result.outcome is PortOutcome.CONTAINED:
        raise AlreadyFixedError(
            f"the fix is already in the source of {build}: fixed in this build, nothing to patch",
            release=result.release,
        )
    if result.outcome is PortOutcome.SOURCE_GONE:
        raise SourceGoneError(result.release)
    if result.outcome is PortOutcome.CONFLICT:
        first = result.failed[0] if result.failed else HunkPlace("", 0, 0)
        message = f"the fix does not apply to the source of {build}: {result.detail}"
        if first.text:
            message += f"\n{first.where()}:\n{first.text.rstrip()}"
        raise PortConflictError(
            message,
            file=first.file,
            hunk=first.text,
            hint="rebase the fix on the build's source (see --json for every failing hunk)",
        )
    return result.diff


@dataclass(frozen=True)
class _HunkRef:
    """A hunk of the fix: where it is reported, and the file section it belongs to."""

    place: HunkPlace
    fd: FileDiff
    section: int  # the file section's place in its commit's diff, from 0

    @property
    def key(self) -> tuple[int, int, int]:
        """Commit, section, hunk: unique even when a commit changes one file twice."""
        return (self.place.commit, self.section, self.place.hunk)


def _port_copies(
    commits: list[tuple[int, Commit]], hunks: tuple[_HunkRef, ...], work: Path, release: str
) -> PortResult:
    """Port on the copies in ``work/tree``."""
    tree = work / "tree"
    paths = sorted({h.fd.path for h in hunks})
    everything = tuple(h.place for h in hunks)
    # Already there? Newest commit first, each hunk exactly (an offset is fine).
    back = _apply_commits(tree, work / "back", commits[::-1], reverse=True)
    if back.applied:
        return PortResult(
            release, PortOutcome.CONTAINED, present=everything,
            detail="the whole fix reverse-applies: fixed in this build",
        )  # fmt: skip
    fwd = _apply_commits(tree, work / "fwd", commits, reverse=False)
    if fwd.applied and not fwd.moved:
        return PortResult(
            release, PortOutcome.CLEAN, diff=_diff(tree, work / "fwd", paths),
            detail="applies cleanly",
        )  # fmt: skip
    # A hunk that failed or needed fuzz may be one the build already has. (One that
    # applied exactly, at an offset or not, found its old lines: it is not there.)
    present = [h for h in hunks if h.key in fwd.doubtful and _present(tree, work, h)]
    if len(present) == len(hunks):
        return PortResult(
            release, PortOutcome.CONTAINED, present=everything,
            detail="every hunk is already in this build's source: fixed in this build",
        )  # fmt: skip
    if present:
        lacking = tuple(_shown(h) for h in hunks if h not in present)
        return PortResult(
            release, PortOutcome.CONFLICT, failed=lacking,
            present=tuple(h.place for h in present),
            detail=f"the fix is only partly in this build already ({len(present)} of "
            f"{len(hunks)} hunks are there): the rest needs porting by hand",
        )  # fmt: skip
    if not fwd.applied:
        return PortResult(
            release, PortOutcome.CONFLICT, failed=tuple(fwd.failed), moved=tuple(fwd.moved),
            detail=f"{len(fwd.failed)} of {len(hunks)} hunks do not apply",
        )  # fmt: skip
    return PortResult(
        release, PortOutcome.MOVED, diff=_diff(tree, work / "fwd", paths), moved=tuple(fwd.moved),
        detail=f"applies with {len(fwd.moved)} of {len(hunks)} hunks moved: "
        + "; ".join(f"{h.where()} ({_how(h)})" for h in fwd.moved),
    )  # fmt: skip


@dataclass
class _Applied:
    """What GNU patch did with a run of commits."""

    applied: bool = True
    moved: list[HunkPlace] = field(default_factory=list)
    failed: list[HunkPlace] = field(default_factory=list)
    doubtful: set[tuple[int, int, int]] = field(default_factory=set)  # failed or fuzzy hunks


def _apply_commits(
    tree: Path, dest: Path, commits: list[tuple[int, Commit]], *, reverse: bool
) -> _Applied:
    """Copy ``tree`` to ``dest`` and apply ``commits`` there, one after the other.

    Reverse (is the fix there?) allows no fuzz: a fuzzy match is no proof.
    """
    shutil.copytree(tree, dest, dirs_exist_ok=True)
    result = _Applied()
    for number, commit in commits:
        diff = dest.parent / f"{dest.name}-{number}.diff"
        diff.write_bytes(commit.diff.encode("utf-8", "surrogateescape"))
        for section, place, ok in _run_patch(dest, diff, commit, number, reverse=reverse):
            if not ok:
                result.applied = False
                result.failed.append(place)
            elif place.offset or place.fuzz:
                result.moved.append(place)
            if not ok or place.fuzz:
                result.doubtful.add((number, section, place.hunk))
    return result


def _run_patch(
    dest: Path, diff: Path, commit: Commit, number: int, *, reverse: bool, dry_run: bool = False
) -> list[tuple[int, HunkPlace, bool]]:
    """Run GNU patch; every hunk of ``commit``: its section, where it went, whether it applied."""
    argv = [
        "patch", "-p1", "--force", "--reject-file=-", "--no-backup-if-mismatch",
        "--quoting-style=literal", f"--fuzz={0 if reverse else FUZZ}",
        "-d", str(dest), "-i", str(diff.absolute()),
    ]  # fmt: skip
    argv += ["--reverse"] if reverse else []
    argv += ["--dry-run"] if dry_run else []
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=_ENV, check=False)
    except OSError as e:
        raise BuildError(f"cannot run GNU patch: {e}", hint="apt-get install patch") from e
    if proc.returncode > 1:  # 1: some hunks failed; 2: trouble
        raise BuildError(
            f"GNU patch could not apply commit {number} of the fix:\n"
            f"{(proc.stdout + proc.stderr).strip()[-2000:]}",
            hint="check that the fix is a well-formed unified diff",
        )
    return _read_patch_output(proc.stdout, commit, number)


def _read_patch_output(out: str, commit: Commit, number: int) -> list[tuple[int, HunkPlace, bool]]:
    """Where each hunk went, from GNU patch's messages (silence: exactly where the fix says).

    patch names each file section as it starts it ("patching file x"), in
    the fix's order, then speaks only of hunks that moved or failed.
    """
    reports: list[dict[int, tuple[bool, int, int]]] = []
    for line in out.splitlines():
        if _FILE.match(line):
            reports.append({})
        elif (m := _HUNK.match(line)) and reports:
            ok = m.group(2) == "succeeded"
            reports[-1][int(m.group(1))] = (ok, int(m.group(4) or 0), int(m.group(3) or 0))
    places = []
    for k, fd in enumerate(commit.files):
        # A section patch never started (it skipped the file) applied nothing.
        seen = reports[k] if k < len(reports) else None
        for n, hunk in enumerate(fd.hunks, 1):
            ok, offset, fuzz = (seen is not None, 0, 0)
            if seen is not None and n in seen:
                ok, offset, fuzz = seen[n]
            text = "" if ok else hunk.text
            places.append((k, HunkPlace(fd.path, number, n, offset, fuzz, text), ok))
    return places


def _present(tree: Path, work: Path, h: _HunkRef) -> bool:
    """The hunk's change is in the build's file already: it reverse-applies there exactly.

    Checked on the build's file as it is, hunk by hunk, so for a file that
    several commits change it is a hint, not a proof.
    """
    if not (tree / h.fd.path).is_file():
        return False
    one = replace(h.fd, hunks=(h.fd.hunks[h.place.hunk - 1],))
    single = Commit("", "", "", "", (), (one,))
    diff = work / f"hunk-{h.place.commit}-{h.place.hunk}.diff"
    diff.write_bytes(single.diff.encode("utf-8", "surrogateescape"))
    ((_, _, ok),) = _run_patch(tree, diff, single, h.place.commit, reverse=True, dry_run=True)
    return ok


def _every_hunk(commits: list[tuple[int, Commit]]) -> tuple[_HunkRef, ...]:
    return tuple(
        _HunkRef(HunkPlace(fd.path, i, n), fd, k)
        for i, c in commits
        for k, fd in enumerate(c.files)
        for n in range(1, len(fd.hunks) + 1)
    )


def _shown(h: _HunkRef) -> HunkPlace:
    """The hunk's place with its text, for showing it."""
    return replace(h.place, text=h.fd.hunks[h.place.hunk - 1].text)


def _how(h: HunkPlace) -> str:
    parts = [f"offset {h.offset:+d}"] if h.offset else []
    parts += [f"fuzz {h.fuzz}"] if h.fuzz else []
    return ", ".join(parts)


def _diff(before: Path, after: Path, paths: list[str]) -> str:
    """``diff -u`` of each file from ``before`` to ``after``, labelled a/ and b/ for -p1."""
    out = []
    for path in paths:
        old = before / path
        argv = [
            "diff", "-u", "--label", f"a/{path}" if old.is_file() else "/dev/null",
            "--label", f"b/{path}", str(old) if old.is_file() else "/dev/null",
            str(after / path),
        ]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, check=False)
        if proc.returncode > 1:
            raise BuildError(f"diff failed on {path}: {proc.stderr.decode(errors='replace')}")
        out.append(proc.stdout.decode("utf-8", "surrogateescape"))
    return "".join(out)
