"""Fixes made in tests: unified diffs and format-patch mboxes of small texts, and of real trees."""

from __future__ import annotations

import difflib
from pathlib import Path

from suture.builder import source

BASE = "".join(f"line {i}\n" for i in range(1, 81))
FIXED = BASE.replace("line 20\n", "line 20 fixed\n").replace("line 60\n", "line 60\nadded\n")


def udiff(before: str, after: str, path: str = "fs/x.c") -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(True), after.splitlines(True), f"a/{path}", f"b/{path}"
        )
    )


def mbox(*commits: tuple[str, str]) -> str:
    """format-patch output of (subject, diff) commits."""
    return "".join(
        f"From {i:040x} Mon Sep 17 00:00:00 2001\nFrom: T <t@example.org>\n"
        f"Date: Mon, 1 Dec 2025 09:00:00 +0000\nSubject: [PATCH {i}/{len(commits)}] {subject}\n"
        f"\n---\n{diff}-- \n2.39.5\n\n"
        for i, (subject, diff) in enumerate(commits, 1)
    )


def make_fix(tree: source.SourceTree, path: str, *edits: tuple[str, str], out: Path) -> Path:
    before = (tree.path / path).read_text()
    after = before
    for old, new in edits:
        assert old in after, f"{old!r} not in {path}"
        after = after.replace(old, new, 1)
    text = "".join(
        difflib.unified_diff(
            before.splitlines(True), after.splitlines(True), f"a/{path}", f"b/{path}"
        )
    )
    fix = out / (path.replace("/", "_") + f".{abs(hash(text)) % 10**6}.patch")
    fix.write_text(text)
    return fix


def make_multi_fix(
    tree: source.SourceTree, files: list[tuple[str, list[tuple[str, str]]]], out: Path
) -> Path:
    """One fix that edits several files, as ``git diff`` writes it."""
    text = "".join(make_fix(tree, path, *edits, out=out).read_text() for path, edits in files)
    fix = out / f"multi.{abs(hash(text)) % 10**6}.patch"
    fix.write_text(text)
    return fix


SHOW = "\tseq_puts(m, saved_command_line);\n"


# kpatch's syscall macros: newuname's body is patched through its stubs.
SYSCALL_EDITS = [
    ('#include "uid16.h"\n', '#include "uid16.h"\n#include "kpatch-syscall.h"\n'),
    (
        "SYSCALL_DEFINE1(newuname, struct new_utsname __user *, name)\n{\n"
        "\tstruct new_utsname tmp;\n\n\tdown_read(&uts_sem);\n"
        "\tmemcpy(&tmp, utsname(), sizeof(tmp));\n",
        "KPATCH_SYSCALL_DEFINE1(newuname, struct new_utsname __user *, name)\n{\n"
        "\tstruct new_utsname tmp;\n\n\tdown_read(&uts_sem);\n"
        "\tmemcpy(&tmp, utsname(), sizeof(tmp));\n"
        "\tif (!name)\n"
        '\t\tKPATCH_PRINTK(KERN_DEBUG "suture: newuname(NULL)\\n");\n'
        '\tstrlcat(tmp.sysname, ".suture", sizeof(tmp.sysname));\n',
    ),
]
