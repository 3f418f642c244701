from __future__ import annotations

import pytest

from suture.builder.fix import Fix
from suture.errors import BuildError

FIX = """\
Header: ignored
--- a/fs/x.c
+++ b/fs/x.c
@@ -10,4 +10,6 @@
 ten
+new a
+new b
 eleven
-twelve
+twelve!
 thirteen
@@ -50,3 +52,2 @@
 fifty
-fifty-one
 fifty-two
"""


def test_line_map_follows_hunks() -> None:
    lm = Fix.parse(FIX).files["fs/x.c"]
    assert lm.new_line(5) == 5  # before any hunk
    assert lm.new_line(10) == 10
    assert lm.new_line(11) == 13  # after two added lines
    assert lm.new_line(12) is None  # replaced
    assert lm.new_line(13) == 15
    assert lm.new_line(40) == 42  # between hunks: +2
    assert lm.new_line(50) == 52
    assert lm.new_line(51) is None
    assert lm.new_line(52) == 53
    assert lm.new_line(100) == 101  # after everything: +1


def test_only_c_files() -> None:
    with pytest.raises(BuildError, match=r"include/x\.h"):
        Fix.parse("--- a/include/x.h\n+++ b/include/x.h\n@@ -1 +1 @@\n-a\n+b\n")


def test_not_a_diff() -> None:
    with pytest.raises(BuildError, match="not a unified diff"):
        Fix.parse("hello\n")


def test_deleted_file() -> None:
    with pytest.raises(BuildError, match="deletes"):
        Fix.parse("--- a/x.c\n+++ /dev/null\n@@ -1 +0,0 @@\n-a\n")
