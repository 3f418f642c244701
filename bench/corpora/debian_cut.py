"""Cut per-fix patches out of the difference between two Debian kernel source trees.

Shared by the corpora's ``make.py`` (trixie-dev, backports-dev). A corpus
names its base (the exact source of one Debian image), the Debian version
pairs its fixes come from, and per fix the hunks of ``diff -U3 -p old new``
that are that upstream commit's (chosen by hand). This module applies those
hunks to the base file with GNU patch (``-F0``; offsets noted), writes each
commit's diff against the base as a ``git format-patch`` mail with the
provenance lines in its text, and the manifest row bench/stable_dev.py reads.

The trees come from Suture's own cache of unpacked ``linux-source-*``
packages (``suture.packages.sources.ensure``: ``apt-get download`` through the
private apt configuration for suites the host does not list); they are read,
never written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Source:
    """One Debian kernel source: the package, its version, and an image built from it."""

    package: str  # linux-source-6.12
    version: str  # 6.12.117-1
    release: str  # 6.12.117+deb13-amd64 (linux-image-<release>)

    def tree(self) -> Path:
        from suture.packages import sources

        return sources.ensure(self.package, self.version, self.release)


@dataclass(frozen=True)
class Commit:
    """The hunks of one upstream commit: file -> hunk indices (None: every hunk)."""

    subject: str
    hunks: dict[str, tuple[int, ...] | None]
    cves: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fix:
    """One corpus entry: a whole upstream fix (one or more commits) against the base.

    Attributes:
        id: ``NNN-<subsystem>-<name>``, the patch file's stem.
        range: the key of the corpus' ranges the fix is cut from.
        commits: its commits, in order (one mail each).
        expected: ``built``, ``refused (why)`` or ``no-change (why)``.
        confidence: ``high`` or ``medium`` (the doubt in ``notes``).
        workload: what reaches the code in a QEMU guest, or ``-``.
    """

    id: str
    range: str
    commits: tuple[Commit, ...]
    expected: str
    confidence: str = "high"
    workload: str = "-"
    notes: str = ""


@dataclass(frozen=True)
class Corpus:
    """What a corpus is cut from."""

    name: str
    base: Source
    ranges: dict[str, tuple[Source, Source, str]]  # key -> (old, new, date of new upload)
    fixes: tuple[Fix, ...]
    here: Path


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          errors="surrogateescape")  # fmt: skip
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and cmd[0] != "diff"):
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return proc.stdout


def hunks_of(old: Path, new: Path, rel: str) -> list[str]:
    """The hunks of ``diff -U3 -p`` of one file between two trees (each with its @@ line)."""
    text = _run(["diff", "-U3", "-p", str(old / rel), str(new / rel)])
    return re.split(r"(?m)^(?=@@ )", text)[1:]


def apply(text: str, rel: str, hunks: list[str], work: Path) -> tuple[str, list[str]]:
    """``text`` with ``hunks`` applied by GNU patch without fuzz; the offsets it reported."""
    src, diff = work / "file", work / "hunks.diff"
    src.write_text(text, errors="surrogateescape")
    diff.write_text(f"--- a/{rel}\n+++ b/{rel}\n" + "".join(hunks), errors="surrogateescape")
    proc = subprocess.run(
        ["patch", "-F0", "--no-backup-if-mismatch", "-f", str(src), str(diff)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{rel}: the hunks do not apply to the base:\n{proc.stdout}")
    moved = [line.strip() for line in proc.stdout.splitlines() if "offset" in line]
    return src.read_text(errors="surrogateescape"), moved


def udiff(rel: str, before: str, after: str, work: Path) -> str:
    """``diff -U3 -p`` of two versions of ``rel``, with a/ and b/ labels."""
    a, b = work / "a", work / "b"
    a.write_text(before, errors="surrogateescape")
    b.write_text(after, errors="surrogateescape")
    return _run(["diff", "-U3", "-p", "--label", f"a/{rel}", "--label", f"b/{rel}",
                 str(a), str(b)])  # fmt: skip


def cut(
    corpus: Corpus, fix: Fix, trees: dict[str, Path], work: Path
) -> tuple[list[str], list[str], list[str]]:
    """The fix's commits as diffs against the base: (diffs, files, hunks moved)."""
    old, new, _ = corpus.ranges[fix.range]
    state: dict[str, str] = {}
    diffs, files, moved = [], [], []
    for commit in fix.commits:
        parts = []
        for rel, which in commit.hunks.items():
            every = hunks_of(trees[old.version], trees[new.version], rel)
            if not every:
                raise SystemExit(
                    f"{fix.id}: {rel} does not differ in {old.version} -> {new.version}"
                )
            chosen = every if which is None else [every[i] for i in which]
            before = state.get(rel)
            if before is None:
                before = (trees[corpus.base.version] / rel).read_text(errors="surrogateescape")
            after, shifts = apply(before, rel, chosen, work)
            moved += [f"{rel}: {s}" for s in shifts]
            parts.append(udiff(rel, before, after, work))
            state[rel] = after
            if rel not in files:
                files.append(rel)
        diffs.append("".join(parts))
    return diffs, files, moved


def _stat(diff: str) -> tuple[int, int]:
    lines = diff.splitlines()
    plus = sum(1 for x in lines if x.startswith("+") and not x.startswith("+++"))
    minus = sum(1 for x in lines if x.startswith("-") and not x.startswith("---"))
    return plus, minus


def mail(corpus: Corpus, fix: Fix, diffs: list[str]) -> str:
    """The fix as ``git format-patch --stdout`` mails, provenance lines in each commit text."""
    old, new, date = corpus.ranges[fix.range]
    base = corpus.base
    out, count = [], len(fix.commits)
    for i, (commit, diff) in enumerate(zip(fix.commits, diffs, strict=True), 1):
        tag = "[PATCH]" if count == 1 else f"[PATCH {i}/{count}]"
        plus, minus = _stat(diff)
        files = re.findall(r"(?m)^\+\+\+ b/(\S+)", diff)
        out.append(
            "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
            f"From: Unknown upstream author <unknown@{corpus.name}.invalid>\n"
            f"Date: {date}\n"
            f"Subject: {tag} {commit.subject}\n\n"
            f"Origin: Debian {new.package} {old.version} -> {new.version} (upstream stable fix "
            f"shipped by Debian {new.version})\n"
            f"Upstream-Subject: {commit.subject}\n"
            f"CVE: {' '.join(commit.cves) or '-'}\n"
            "Author: not recorded in the Debian changelog\n"
            f"Corpus-Id: {fix.id} (commit {i} of {count})\n"
            f"Expected: {fix.expected}\n"
            f"Applies-To: {base.package} {base.version} (linux-image-{base.release}), "
            "patch -p1 -F0; "
            "hunks taken from the Debian tree difference and rewritten against the base\n"
            "---\n"
            f" {len(files)} file(s) changed, {plus} insertions(+), {minus} deletions(-)\n\n"
            f"{diff}-- \n{corpus.name}\n\n"
        )
    return "".join(out)


def _functions(diff: str) -> list[str]:
    out: list[str] = []
    for ctx in re.findall(r"(?m)^@@ [^@]+ @@ (.*)$", diff):
        m = re.search(r"(\w+)\s*\(", ctx)
        if m and m.group(1) not in out:
            out.append(m.group(1))
    return out


COLUMNS = (
    "id", "file", "funcs", "subsystem", "lines_changed", "target", "cve", "upstream_subject",
    "patch", "split", "subject_confidence", "notes", "expected_outcome", "commits",
    "shipped_in", "workload",
)  # fmt: skip


def row(corpus: Corpus, fix: Fix, diffs: list[str], files: list[str],
        catalog: dict[str, dict[str, object]] | None) -> dict[str, str]:  # fmt: skip
    """One manifest.tsv row (stable-dev's columns where they apply, and the expected outcome)."""
    diff = "".join(diffs)
    plus, minus = _stat(diff)
    whole = all(w is None for c in fix.commits for w in c.hunks.values())
    targets: list[str] = []
    for f in files:
        if f.endswith(".c"):
            unit = (catalog or {}).get(f)
            name = str(unit["objname"]) if unit else "?"
            if name not in targets:
                targets.append(name)
    headers = [f for f in files if f.endswith(".h")]
    if headers and not targets:
        targets.append("headers: " + ",".join(headers))
    return {
        "id": fix.id,
        "file": ",".join(files),
        "funcs": ",".join(_functions(diff)) or "-",
        "subsystem": "-".join(fix.id.split("-")[1:-1]),
        "lines_changed": str(plus + minus),
        "target": ",".join(targets),
        "cve": ",".join(v for c in fix.commits for v in c.cves) or "-",
        "upstream_subject": " | ".join(c.subject for c in fix.commits),
        "patch": f"{fix.id}.patch",
        "split": "no" if whole else "yes",
        "subject_confidence": fix.confidence,
        "notes": fix.notes or "-",
        "expected_outcome": fix.expected,
        "commits": str(len(fix.commits)),
        "shipped_in": corpus.ranges[fix.range][1].version,
        "workload": fix.workload,
    }


def main(corpus: Corpus, argv: list[str] | None = None) -> int:
    """Write (or with ``--check``, compare) every patch and manifest.tsv; print a JSON report."""
    parser = argparse.ArgumentParser(description=f"make the {corpus.name} corpus")
    parser.add_argument("--catalog", type=Path, help="the builder's catalog.json of the base build")
    parser.add_argument("--check", action="store_true", help="fail if a patch would change")
    args = parser.parse_args(argv)
    catalog = json.loads(args.catalog.read_text())["units"] if args.catalog else None
    sources = {corpus.base} | {s for r in corpus.ranges.values() for s in r[:2]}
    trees = {s.version: s.tree() for s in sorted(sources, key=lambda s: s.version)}
    report, rows, changed = [], [], []
    with tempfile.TemporaryDirectory(prefix=f"{corpus.name}-") as tmp:
        for fix in corpus.fixes:
            diffs, files, moved = cut(corpus, fix, trees, Path(tmp))
            text = mail(corpus, fix, diffs)
            rows.append(row(corpus, fix, diffs, files, catalog))
            path = corpus.here / f"{fix.id}.patch"
            if not path.exists() or path.read_text(errors="surrogateescape") != text:
                changed.append(fix.id)
                if not args.check:
                    path.write_text(text, errors="surrogateescape")
            digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
            report.append({"id": fix.id, "sha256": digest, "files": files, "moved": moved})
    lines = ["\t".join(COLUMNS)] + ["\t".join(r[c] for c in COLUMNS) for r in rows]
    manifest = "\n".join(lines) + "\n"
    path = corpus.here / "manifest.tsv"
    if not path.exists() or path.read_text() != manifest:
        changed.append("manifest.tsv")
        if not args.check:
            path.write_text(manifest)
    print(json.dumps({"format": 1, "corpus": corpus.name, "base": corpus.base.version,
                      "fixes": report, "changed": changed}, indent=2))  # fmt: skip
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit("run a corpus' make.py")
