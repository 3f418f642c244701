"""suture.builder.compile on a hard-link farm: a real patch and make never write the shared source.

The tree is a tiny one (a Makefile with kbuild's single-object target form),
but ``patch``, ``make`` and the compiler are the real ones.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from suture.builder import compile as compile_mod
from suture.builder.source import SourceTree
from suture.errors import BuildError
from suture.packages import sources

ORIGINAL = "int answer(void)\n{\n\treturn 41;\n}\n"
FIX = """\
--- a/fs/a.c
+++ b/fs/a.c
@@ -1,4 +1,4 @@
 int answer(void)
 {
-\treturn 41;
+\treturn 42;
 }
"""
BROKEN = FIX.replace("+\treturn 42;", "+\treturn 42")  # does not compile

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("make", "patch", "cc")), reason="needs make, patch and cc"
)


@pytest.fixture
def farm(tmp_path: Path) -> tuple[Path, SourceTree]:
    shared = tmp_path / "sources" / "linux"
    (shared / "fs").mkdir(parents=True)
    (shared / "Makefile").write_text("%.o: %.c\n\t$(CC) $(KCFLAGS) -c -o $@ $<\n")
    (shared / "fs" / "a.c").write_text(ORIGINAL)
    (shared / "fs" / "b.c").write_text("int other(void) { return 1; }\n")
    for path in shared.rglob("*"):  # as unpacked from a tarball: written long ago
        os.utime(path, (time.time() - 3600,) * 2)
    (tmp_path / "trees" / "r").mkdir(parents=True)
    tree = SourceTree("r", "1", tmp_path / "trees" / "r" / "linux", "cc")
    sources.farm(shared, tree.path)
    return shared, tree


def fix_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fix.patch"
    path.write_text(text)
    return path


def test_compile_pair_leaves_the_shared_source_untouched(
    farm: tuple[Path, SourceTree], tmp_path: Path
) -> None:
    shared, tree = farm
    target = shared / "fs" / "a.c"
    before = target.stat()
    since = time.time() - 1
    pairs = compile_mod.compile_pair(tree, fix_file(tmp_path, FIX), tmp_path / "work")
    after = target.stat()
    assert target.read_text() == ORIGINAL
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_size,
    )
    # The tree's name has the shared inode again, not a copy.
    assert (tree.path / "fs" / "a.c").samefile(target)
    assert sources.touched(tree.path, since) == []
    assert not (tree.path.parent / ".set-aside").exists()
    (pair,) = pairs
    assert pair.original.read_bytes() != pair.patched.read_bytes()
    assert not (tree.path / "fs" / "a.o").exists()  # never taken for up to date later


def test_a_failed_compile_puts_the_tree_back(farm: tuple[Path, SourceTree], tmp_path: Path) -> None:
    shared, tree = farm
    with pytest.raises(BuildError, match=r"compiling fs/a.c with the fix failed"):
        compile_mod.compile_pair(tree, fix_file(tmp_path, BROKEN), tmp_path / "work")
    assert (shared / "fs" / "a.c").read_text() == ORIGINAL
    assert (tree.path / "fs" / "a.c").samefile(shared / "fs" / "a.c")


def test_the_next_build_puts_back_what_a_killed_one_left(
    farm: tuple[Path, SourceTree], tmp_path: Path
) -> None:
    shared, tree = farm
    aside = tree.path.parent / ".set-aside"
    # Killed between patching and putting back: the tree holds the patched copy.
    compile_mod._set_aside(tree, ["fs/a.c"], aside)
    compile_mod._patch(tree, fix_file(tmp_path, FIX))
    assert "42" in (tree.path / "fs" / "a.c").read_text()
    assert (shared / "fs" / "a.c").read_text() == ORIGINAL
    pairs = compile_mod.compile_pair(tree, fix_file(tmp_path, FIX), tmp_path / "work")
    assert (tree.path / "fs" / "a.c").samefile(shared / "fs" / "a.c")
    assert pairs[0].original.read_bytes() != pairs[0].patched.read_bytes()  # from the original


def test_even_a_patch_that_writes_in_place_cannot_reach_the_shared_file(
    farm: tuple[Path, SourceTree], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GNU patch renames a new file over the old; another patch program might not.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "patch"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "if '--dry-run' not in sys.argv:\n"
        "    path = sys.argv[sys.argv.index('-d') + 1] + '/fs/a.c'\n"
        "    with open(path, 'r+') as f:\n"
        "        text = f.read().replace('41', '42')\n"
        "        f.seek(0)\n"
        "        f.write(text)\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir), prepend=os.pathsep)
    shared, tree = farm
    (pair,) = compile_mod.compile_pair(tree, fix_file(tmp_path, FIX), tmp_path / "work")
    assert pair.original.read_bytes() != pair.patched.read_bytes()  # it did patch
    assert (shared / "fs" / "a.c").read_text() == ORIGINAL
    assert (tree.path / "fs" / "a.c").samefile(shared / "fs" / "a.c")


def test_an_error_in_an_included_header_is_shown(
    farm: tuple[Path, SourceTree], tmp_path: Path
) -> None:
    _, tree = farm
    (tree.path / "fs" / "bad.h").write_text("#error this header is broken\n")
    fix = FIX.replace(" int answer(void)", '+#include "bad.h"\n int answer(void)', 1)
    fix = fix.replace("@@ -1,4 +1,4 @@", "@@ -1,4 +1,5 @@")
    with pytest.raises(BuildError) as e:
        compile_mod.compile_pair(tree, fix_file(tmp_path, fix), tmp_path / "work")
    assert "bad.h:1" in e.value.message and "error:" in e.value.message


def test_key_reads_reach_module_objects_only() -> None:
    # KCFLAGS also compile the tree's prepared files (asm-offsets.c), which
    # the forced header must not reach.
    (kcflags,) = (f for f in compile_mod.KEY_READ_FLAGS if f.startswith("KCFLAGS="))
    (module,) = (f for f in compile_mod.KEY_READ_FLAGS if f.startswith("CFLAGS_MODULE="))
    assert "-include" not in kcflags
    assert module.endswith("suture_static_keys.h")
