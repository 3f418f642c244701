from __future__ import annotations

import pytest

from suture.builder.fix import Fix, cve_ids, require_c_files
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


def test_only_c_files_and_headers() -> None:
    # Parsing takes any file; the builder refuses what it cannot patch, in one place.
    fix = Fix.parse("--- a/arch/x86/x.S\n+++ b/arch/x86/x.S\n@@ -1 +1 @@\n-a\n+b\n")
    assert list(fix.files) == ["arch/x86/x.S"]
    with pytest.raises(BuildError, match=r"arch/x86/x\.S"):
        require_c_files(fix)
    require_c_files(Fix.parse(FIX))
    header = Fix.parse("--- a/include/x.h\n+++ b/include/x.h\n@@ -1 +1 @@\n-a\n+b\n")
    require_c_files(header)
    assert header.headers == ["include/x.h"] and header.sources == []


def test_not_a_diff() -> None:
    with pytest.raises(BuildError, match="not a unified diff"):
        Fix.parse("hello\n")


def test_deleted_file() -> None:
    with pytest.raises(BuildError, match="deletes"):
        Fix.parse("--- a/x.c\n+++ /dev/null\n@@ -1 +0,0 @@\n-a\n")


def test_plain_diff_is_one_commit_without_subject() -> None:
    fix = Fix.parse(FIX)
    (commit,) = fix.commits
    assert (commit.subject, commit.author, commit.cves) == ("", "", ())
    assert commit.message == "Header: ignored"
    assert [
        (h.old_start, h.old_count, h.new_start, h.new_count) for h in commit.files[0].hunks
    ] == [
        (10, 4, 10, 6),
        (50, 3, 52, 2),
    ]
    assert fix.description == ""


def test_several_files_keep_their_own_maps() -> None:
    # The "--- a/y.c" line after x.c's last hunk is not a removed line of x.c.
    text = (
        "diff --git a/x.c b/x.c\n--- a/x.c\n+++ b/x.c\n@@ -5,2 +5,3 @@\n five\n+new\n six\n"
        "diff --git a/y.c b/y.c\n--- a/y.c\n+++ b/y.c\n@@ -1 +1 @@\n-a\n+b\n"
    )
    fix = Fix.parse(text)
    assert sorted(fix.files) == ["x.c", "y.c"]
    x = fix.files["x.c"]
    assert x.new_line(6) == 7
    assert x.new_line(7) == 8  # not removed
    assert fix.files["y.c"].new_line(1) is None


def test_no_newline_marker_and_blank_context() -> None:
    # A mailer dropped the space of a blank context line; "\\ No newline" ends the file.
    text = "--- a/x.c\n+++ b/x.c\n@@ -1,3 +1,3 @@\n a\n\n-b\n\\ No newline at end of file\n+c\n"
    lm = Fix.parse(text).files["x.c"]
    assert lm.new_line(1) == 1
    assert lm.new_line(2) == 2
    assert lm.new_line(3) is None


def test_truncated_hunk_is_refused() -> None:
    with pytest.raises(BuildError, match="malformed hunk"):
        Fix.parse("--- a/x.c\n+++ b/x.c\n@@ -1,3 +1,3 @@\n a\n-b\nnot a hunk line\n")


def test_zero_context_insertion_maps_lines() -> None:
    # diff -U0: "-5,0" means after old line 5.
    lm = Fix.parse("--- a/x.c\n+++ b/x.c\n@@ -5,0 +6,2 @@\n+n1\n+n2\n").files["x.c"]
    assert [lm.new_line(i) for i in (4, 5, 6, 7)] == [4, 5, 8, 9]


# `git format-patch --stdout` of one commit, as git 2.39 writes it.
ONE = """\
From 1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c Mon Sep 17 00:00:00 2001
From: =?UTF-8?q?J=C3=B6rg=20Hacker?= <jh@example.org>
Date: Tue, 4 Nov 2025 10:00:00 +0100
Subject: [PATCH] proc: cmdline: check the length before copying, a subject
 long enough to be folded

A crafted read overflows the buffer (CVE-2025-1234).

Fixes: 0123456789ab ("proc: cmdline")
Cc: stable@vger.kernel.org
Signed-off-by: Jörg Hacker <jh@example.org>
---
 fs/proc/cmdline.c | 3 ++-
 1 file changed, 2 insertions(+), 1 deletion(-)

diff --git a/fs/proc/cmdline.c b/fs/proc/cmdline.c
index 1111111..2222222 100644
--- a/fs/proc/cmdline.c
+++ b/fs/proc/cmdline.c
@@ -8,6 +8,7 @@
 static int cmdline_proc_show(struct seq_file *m, void *v)
 {
-\tseq_puts(m, saved_command_line);
+\tif (m)
+\t\tseq_puts(m, saved_command_line);
 \tseq_putc(m, '\\n');
 \treturn 0;
 }
--\x20
2.39.5

"""
# Two commits of one file: the second moves lines the first already moved.
TWO = """\
From aaaa000000000000000000000000000000000001 Mon Sep 17 00:00:00 2001
From: A <a@example.org>
Date: Mon, 1 Dec 2025 09:00:00 +0000
Subject: [PATCH 1/2] x: add two lines

Part of the fix of cve-2025-0001.
---
 fs/x.c | 2 ++
 1 file changed, 2 insertions(+)

diff --git a/fs/x.c b/fs/x.c
--- a/fs/x.c
+++ b/fs/x.c
@@ -9,3 +9,5 @@
 nine
+new a
+new b
 ten
 eleven
--\x20
2.39.5


From aaaa000000000000000000000000000000000002 Mon Sep 17 00:00:00 2001
From: B <b@example.org>
Date: Mon, 1 Dec 2025 09:05:00 +0000
Subject: [PATCH 2/2] x: drop a line (CVE-2025-0002)

From the same report; also fixes CVE-2025-0001.
---
 fs/x.c | 1 -
 1 file changed, 1 deletion(-)

diff --git a/fs/x.c b/fs/x.c
--- a/fs/x.c
+++ b/fs/x.c
@@ -30,3 +30,2 @@
 kept
-gone
 kept
--\x20
2.39.5

"""


def test_format_patch_of_one_commit() -> None:
    fix = Fix.parse(ONE)
    (commit,) = fix.commits
    assert commit.subject == (
        "proc: cmdline: check the length before copying, a subject long enough to be folded"
    )
    assert commit.author == "Jörg Hacker <jh@example.org>"
    assert "2025" in commit.date
    assert commit.message.startswith("A crafted read overflows the buffer")
    assert commit.message.endswith("Signed-off-by: Jörg Hacker <jh@example.org>")
    assert commit.cves == ("CVE-2025-1234",)
    assert fix.cves == ("CVE-2025-1234",)
    assert fix.description == commit.subject
    assert [f.path for f in commit.files] == ["fs/proc/cmdline.c"]
    lm = fix.files["fs/proc/cmdline.c"]
    assert lm.new_line(10) is None
    assert lm.new_line(11) == 12
    # The "-- " signature after the last hunk is not part of the diff.
    assert commit.diff.endswith(" }\n")
    assert commit.diff.startswith("--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -8,6 ")


def test_mbox_of_two_commits_composes_line_maps() -> None:
    fix = Fix.parse(TWO)
    first, second = fix.commits
    assert (first.subject, second.subject) == (
        "x: add two lines",
        "x: drop a line (CVE-2025-0002)",
    )
    assert (first.author, second.author) == ("A <a@example.org>", "B <b@example.org>")
    assert second.message == "From the same report; also fixes CVE-2025-0001."
    assert first.cves == ("CVE-2025-0001",)
    assert second.cves == ("CVE-2025-0002", "CVE-2025-0001")
    assert fix.cves == ("CVE-2025-0001", "CVE-2025-0002")
    assert fix.description == "x: add two lines; x: drop a line (CVE-2025-0002)"
    # The first commit moves old lines after 9 down by 2; the second removes line 31
    # of that result (old line 29) and moves the rest up by 1.
    lm = fix.files["fs/x.c"]
    assert lm.new_line(9) == 9
    assert lm.new_line(10) == 12
    assert lm.new_line(28) == 30
    assert lm.new_line(29) is None
    assert lm.new_line(30) == 31
    assert lm.new_line(100) == 101


def test_cover_letter_is_no_commit() -> None:
    cover = (
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        "From: A <a@example.org>\nSubject: [PATCH 0/2] x: a series\n\nWhy the series.\n\n"
    )
    fix = Fix.parse(cover + TWO)
    assert [c.subject for c in fix.commits] == [
        "x: add two lines",
        "x: drop a line (CVE-2025-0002)",
    ]


def test_headers_alone_make_a_mail() -> None:
    # A single mail saved without mbox's "From " line.
    mail = ONE.split("\n", 1)[1]
    assert Fix.parse(mail).commits[0].cves == ("CVE-2025-1234",)


def test_cve_ids() -> None:
    assert cve_ids("cve-2024-1 CVE-2024-12345, CVE-2024-12345 and CVE-2021-44228.") == (
        "CVE-2024-12345",
        "CVE-2021-44228",
    )
