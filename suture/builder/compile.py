"""Compile the files a fix touches, before and after the fix, with one section per function.

Only the touched translation units are compiled, in the prepared distro tree,
with the kernel's own flags plus ``-ffunction-sections -fdata-sections`` so
that the differ can compare and pick functions one by one. The tree is put
back as it was whatever happens, under a lock so two builds never interleave.

The tree's files are hard links to a source shared by other builds
(source.py), so nothing here writes into a file of the tree: the files the
fix changes are set aside (a hard link kept beside the tree) and replaced by
copies of their own before ``patch`` runs, and the kept links are renamed
back afterwards, by the next build if this one was killed. GNU patch itself
writes a new file and renames it over the old one; objects are removed
before ``make`` writes them again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from suture import progress
from suture.builder.elfobj import ObjectFile
from suture.builder.fix import Fix
from suture.builder.source import SourceTree
from suture.errors import BuildError
from suture.fsutil import locked

# One section per function and object, and the author API headers (suture_livepatch.h,
# kpatch-macros.h) on the include path. The same flags for both compiles.
INCLUDE_DIR = Path(__file__).parent / "include"
# Each is a tuple of kbuild variables given to make.
SECTION_FLAGS = (f"KCFLAGS=-ffunction-sections -fdata-sections -I{INCLUDE_DIR}",)
# Calls where GCC would jump (a tail call): for callers of carried code (callers.py).
NO_SIBLING_CALL_FLAGS = (f"{SECTION_FLAGS[0]} -fno-optimize-sibling-calls",)
# Static branches as reads of their keys, for a module's code whose keys the
# loader cannot resolve (include/suture_static_keys.h says why). Module objects
# only (CFLAGS_MODULE): KCFLAGS also reach the tree's prepared files, and on
# 7.x the forced header pulls in asm-offsets.h while asm-offsets.c is compiled
# again, which then writes "#define 64 64" for every offset and breaks the tree.
KEY_READ_FLAGS = (*SECTION_FLAGS, f"CFLAGS_MODULE=-include {INCLUDE_DIR / 'suture_static_keys.h'}")


@dataclass(frozen=True)
class ObjectPair:
    """One translation unit compiled before and after the fix."""

    source: str  # path in the tree, e.g. fs/proc/cmdline.c
    original: Path
    patched: Path


def _patch(tree: SourceTree, fix: Path, *extra: str) -> None:
    proc = subprocess.run(
        ["patch", "-p1", "-F0", "--no-backup-if-mismatch", "-s", "-d", str(tree.path), "-i",
         str(fix.absolute()), *extra],  # patch -d changes folder first
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise BuildError(
            f"the fix does not apply to the source of {tree.release}:\n"
            f"{(proc.stdout + proc.stderr).strip()[-2000:]}",
            hint=f"rebase the fix on Debian's linux-source at {tree.version}",
        )


def _objects(sources: list[str]) -> list[str]:
    return [s.removesuffix(".c") + ".o" for s in sources]


def _make_objects(tree: SourceTree, sources: list[str], flags: tuple[str, ...]) -> dict[str, str]:
    """Compile ``sources`` in the tree with one ``make`` (side by side, up to the cores).

    Returns the compiler's messages of each file that failed (empty: all compiled).
    The objects are left in the tree for the caller to take.
    """
    objs = _objects(sources)
    for obj in objs:
        (tree.path / obj).unlink(missing_ok=True)  # make must compile, whatever mtimes say
    with progress.heartbeat(f"compiling {len(objs)} file(s)"):
        together = subprocess.run(
            tree.make_argv("-k", *flags, *objs), capture_output=True, text=True, check=False
        )
    failed = {}
    for src, obj in zip(sources, objs, strict=True):
        if not (tree.path / obj).exists():
            mine = [line for line in together.stderr.splitlines() if src in line or obj in line]
            # An error in a header the file includes names the header, not the file.
            said = any("error:" in line for line in mine) and "\n".join(mine[-40:])
            failed[src] = said or together.stderr.strip()[-3000:]
    return failed


def _take(tree: SourceTree, source: str, dest: Path) -> None:
    """Move a compiled object out of the tree (the next step must compile it again)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(tree.path / _objects([source])[0], dest)


def _originals(tree: SourceTree, sources: list[str], work: Path, flags: tuple[str, ...]) -> None:
    """The objects of the pristine ``sources`` into ``work/orig``: from the build's cache or made.

    A build's tree only ever changes under the build lock and is put back
    after each fix, so the object of an unchanged file with the same flags is
    the same object: it is compiled once per build (a header fix reaching
    dozens of units compiles only their patched side when run again).
    """
    cache = (
        tree.path.parent / "objects" / hashlib.sha256("\0".join(flags).encode()).hexdigest()[:16]
    )
    missing = [s for s in sources if not (cache / (s + ".o")).exists()]
    if missing:
        failed = _make_objects(tree, missing, flags)
        if failed:
            src, why = next(iter(failed.items()))
            raise BuildError(
                f"compiling the unchanged {src} failed in the source of {tree.release}:\n{why}",
                hint="remove the build's source folder from the cache and build again",
            )
        for src in missing:
            _take(tree, src, cache / (src + ".o"))
    for src in sources:
        dest = work / "orig" / (src + ".o")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cache / (src + ".o"), dest)


def _set_aside(tree: SourceTree, files: list[str], aside: Path) -> None:
    """Keep each file in ``aside`` by a hard link; the tree gets a copy of its own to patch.

    Files the fix creates are listed in ``aside/.created``, to be removed again.
    """
    created = []
    for rel in files:
        if not (tree.path / rel).exists():
            created.append(rel)
            continue
        kept = aside / rel
        kept.parent.mkdir(parents=True, exist_ok=True)
        os.link(tree.path / rel, kept)
        copy = tree.path / f"{rel}.suture-copy"
        shutil.copy2(kept, copy)
        copy.replace(tree.path / rel)
    aside.mkdir(parents=True, exist_ok=True)
    (aside / ".created").write_text("".join(f"{rel}\n" for rel in created))


def _put_back(tree: SourceTree, aside: Path) -> None:
    """Rename the kept files back over the tree's (each name gets its original inode again)."""
    if not aside.exists():
        return
    listed = aside / ".created"
    for rel in listed.read_text().split() if listed.exists() else []:
        (tree.path / rel).unlink(missing_ok=True)
    listed.unlink(missing_ok=True)
    for kept in sorted(p for p in aside.rglob("*") if not p.is_dir()):
        kept.replace(tree.path / kept.relative_to(aside))
    shutil.rmtree(aside)


def compile_originals(tree: SourceTree, sources: list[str], work: Path) -> dict[str, ObjectFile]:
    """Compile files the fix does not touch, as they are; those that do not compile are left out."""
    out: dict[str, ObjectFile] = {}
    if not sources:
        return out
    with locked(tree.path.parent / ".build.lock"):
        failed = _make_objects(tree, sources, SECTION_FLAGS)
        for src in sources:
            if src not in failed:
                dest = work / (src.removesuffix(".c") + ".o")
                _take(tree, src, dest)
                out[src] = ObjectFile.load(dest)
    return out


def compile_pair(
    tree: SourceTree,
    fix: Path,
    work: Path,
    *,
    flags: tuple[str, ...] = SECTION_FLAGS,
    sources: list[str] | None = None,
) -> list[ObjectPair]:
    """Compile units before and after ``fix`` into ``work``: the fix's .c files by default.

    Args:
        tree: the build's prepared tree (left as it was, whatever happens).
        fix: the unified diff, applied to the tree between the two compiles.
        work: where ``orig/`` and ``patched/`` objects go.
        flags: kbuild variables for both compiles.
        sources: the units to compile (a header fix reaches units it does not change).

    Raises:
        BuildError: the fix does not apply or does not compile; the tree is unchanged.
    """
    files = sorted(Fix.parse(fix.read_text(errors="replace")).files)
    if sources is None:
        sources = [f for f in files if f.endswith(".c")]
    sources = sorted(set(sources))
    aside = tree.path.parent / ".set-aside"
    with locked(tree.path.parent / ".build.lock"):
        _put_back(tree, aside)  # what a killed build left patched
        _patch(tree, fix, "--dry-run")
        for src in sources:
            if not (tree.path / src).exists():
                raise BuildError(f"{src} is not in the source of {tree.release}")
        _originals(tree, sources, work, flags)
        try:
            _set_aside(tree, files, aside)
            _patch(tree, fix)
            failed = _make_objects(tree, sources, flags)
            if failed:
                src, why = next(iter(failed.items()))
                raise BuildError(
                    f"compiling {src} with the fix failed:\n{why}",
                    hint="fix the compile error in the patch",
                )
            for src in sources:
                _take(tree, src, work / "patched" / (src + ".o"))
        finally:
            _put_back(tree, aside)
    return [
        ObjectPair(src, work / "orig" / (src + ".o"), work / "patched" / (src + ".o"))
        for src in sources
    ]
