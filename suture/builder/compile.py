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

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from suture.builder.elfobj import ObjectFile
from suture.builder.fix import Fix
from suture.builder.source import SourceTree
from suture.errors import BuildError
from suture.fsutil import locked

# One section per function and object, and the author API headers (suture_livepatch.h,
# kpatch-macros.h) on the include path. The same flags for both compiles.
INCLUDE_DIR = Path(__file__).parent / "include"
SECTION_FLAGS = f"KCFLAGS=-ffunction-sections -fdata-sections -I{INCLUDE_DIR}"
# Calls where GCC would jump (a tail call): for callers of carried code (callers.py).
NO_SIBLING_CALL_FLAGS = f"{SECTION_FLAGS} -fno-optimize-sibling-calls"
# Static branches as reads of their keys, for a module's code whose keys the
# loader cannot resolve (include/suture_static_keys.h says why).
KEY_READ_FLAGS = f"{SECTION_FLAGS} -include {INCLUDE_DIR / 'suture_static_keys.h'}"


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


def _compile(tree: SourceTree, source: str, dest: Path, flags: str) -> None:
    obj = source.removesuffix(".c") + ".o"
    (tree.path / obj).unlink(missing_ok=True)  # make must compile, whatever mtimes say
    proc = subprocess.run(tree.make_argv(flags, obj), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(
            f"compiling {source} failed:\n{proc.stderr.strip()[-3000:]}",
            hint="fix the compile error in the patch",
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tree.path / obj, dest)
    # The tree's object is the patched or the original one depending on the
    # step; never let make take it for up to date in the next build.
    (tree.path / obj).unlink()


def compile_originals(tree: SourceTree, sources: list[str], work: Path) -> dict[str, ObjectFile]:
    """Compile files the fix does not touch, as they are; those that do not compile are left out.

    One ``make`` for all of them first (it runs the compiles side by side),
    then one by one if that failed, to keep the files that do compile.
    """
    out: dict[str, ObjectFile] = {}
    if not sources:
        return out
    objs = [s.removesuffix(".c") + ".o" for s in sources]
    with locked(tree.path.parent / ".build.lock"):
        for obj in objs:
            (tree.path / obj).unlink(missing_ok=True)
        together = subprocess.run(
            tree.make_argv(SECTION_FLAGS, *objs), capture_output=True, check=False
        )
        for src, obj in zip(sources, objs, strict=True):
            built = tree.path / obj
            if together.returncode != 0 and not built.exists():
                subprocess.run(tree.make_argv(SECTION_FLAGS, obj), capture_output=True, check=False)
            if built.exists():
                dest = work / obj
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(built, dest)
                out[src] = ObjectFile.load(dest)
    return out


def _set_aside(tree: SourceTree, sources: list[str], aside: Path) -> None:
    """Keep each file in ``aside`` by a hard link; the tree gets a copy of its own to patch."""
    for src in sources:
        kept = aside / src
        kept.parent.mkdir(parents=True, exist_ok=True)
        os.link(tree.path / src, kept)
        copy = tree.path / f"{src}.suture-copy"
        shutil.copy2(kept, copy)
        copy.replace(tree.path / src)


def _put_back(tree: SourceTree, aside: Path) -> None:
    """Rename the kept files back over the tree's: each name gets its original inode again."""
    if not aside.exists():
        return
    for kept in sorted(p for p in aside.rglob("*") if not p.is_dir()):
        kept.replace(tree.path / kept.relative_to(aside))
    shutil.rmtree(aside)


def compile_pair(
    tree: SourceTree, fix: Path, work: Path, *, flags: str = SECTION_FLAGS
) -> list[ObjectPair]:
    """Compile every file ``fix`` touches, original and patched, into ``work``.

    Raises:
        BuildError: the fix does not apply or does not compile; the tree is unchanged.
    """
    sources = sorted(Fix.parse(fix.read_text(errors="replace")).files)
    aside = tree.path.parent / ".set-aside"
    with locked(tree.path.parent / ".build.lock"):
        _put_back(tree, aside)  # what a killed build left patched
        _patch(tree, fix, "--dry-run")
        for src in sources:
            if not (tree.path / src).exists():
                raise BuildError(f"{src} is not in the source of {tree.release}")
            _compile(tree, src, work / "orig" / (src + ".o"), flags)
        try:
            _set_aside(tree, sources, aside)
            _patch(tree, fix)
            for src in sources:
                _compile(tree, src, work / "patched" / (src + ".o"), flags)
        finally:
            _put_back(tree, aside)
    return [
        ObjectPair(src, work / "orig" / (src + ".o"), work / "patched" / (src + ".o"))
        for src in sources
    ]
