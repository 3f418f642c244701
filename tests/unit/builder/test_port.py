"""Porting a fix to a build's source, on a small synthetic tree (GNU patch, no kernel)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from suture.builder import port
from suture.builder.fix import Fix
from suture.builder.port import PortOutcome
from suture.errors import (
    AlreadyFixedError,
    NoChangeError,
    PortConflictError,
    SourceGoneError,
)
from tests.support.fixes import BASE, FIXED, mbox, udiff

FIX = Fix.parse(udiff(BASE, FIXED))


def tree_with(tmp_path: Path, text: str, path: str = "fs/x.c") -> Path:
    root = tmp_path / "linux"
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(text)
    return root


def apply_exact(root: Path, diff: str) -> str:
    """What the compile step does: patch -F0 with the build-exact diff, on a copy."""
    copy = root.parent / "applied"
    subprocess.run(["cp", "-r", str(root), str(copy)], check=True)
    subprocess.run(
        ["patch", "-p1", "-F0", "-s", "-d", str(copy)], input=diff, text=True, check=True
    )
    return (copy / "fs/x.c").read_text()


def test_clean(tmp_path: Path) -> None:
    root = tree_with(tmp_path, BASE)
    result = port.port(FIX, root, release="r1")
    assert result.outcome is PortOutcome.CLEAN
    assert (result.moved, result.failed) == ((), ())
    assert apply_exact(root, port.applied_diff(result)) == FIXED
    assert (root / "fs/x.c").read_text() == BASE  # the tree is never changed


def test_offset_is_moved_and_names_the_hunks(tmp_path: Path) -> None:
    root = tree_with(tmp_path, "new 1\nnew 2\nnew 3\n" + BASE)
    result = port.port(FIX, root, release="r1")
    assert result.outcome is PortOutcome.MOVED
    assert [(h.file, h.commit, h.hunk, h.offset, h.fuzz) for h in result.moved] == [
        ("fs/x.c", 1, 1, 3, 0),
        ("fs/x.c", 1, 2, 3, 0),
    ]
    assert "fs/x.c, commit 1, hunk #1 (offset +3)" in result.detail
    # The build-exact diff has the build's line numbers: it applies with no fuzz.
    assert "@@ -20,7 +20,7 @@" in result.diff
    assert apply_exact(root, result.diff) == "new 1\nnew 2\nnew 3\n" + FIXED


def test_fuzz_is_moved(tmp_path: Path) -> None:
    root = tree_with(tmp_path, BASE.replace("line 17\n", "line 17 (edited)\n"))
    result = port.port(FIX, root)
    assert result.outcome is PortOutcome.MOVED
    assert [(h.hunk, h.offset, h.fuzz) for h in result.moved] == [(1, 0, 1)]
    assert "fuzz 1" in result.detail
    assert "line 20 fixed" in apply_exact(root, result.diff)


def test_contained(tmp_path: Path) -> None:
    root = tree_with(tmp_path, "moved\n" + FIXED)
    result = port.port(FIX, root, release="r2")
    assert result.outcome is PortOutcome.CONTAINED
    assert result.diff == ""
    assert len(result.present) == 2
    with pytest.raises(AlreadyFixedError, match="already in the source of r2") as e:
        port.applied_diff(result)
    assert isinstance(e.value, NoChangeError)
    assert e.value.exit_code == 3
    assert e.value.to_dict()["error"] == "already-fixed"


def test_contained_hunk_by_hunk(tmp_path: Path) -> None:
    # The build has both hunks, but moved the second one's code above the first:
    # patch takes hunks in order, so the whole fix does not reverse-apply; each
    # hunk on its own does.
    block = "".join(f"line {i}\n" for i in range(55, 66)).replace("line 60\n", "line 60\nadded\n")
    text = block + FIXED.replace(block, "")
    result = port.port(FIX, tree_with(tmp_path, text))
    assert result.outcome is PortOutcome.CONTAINED
    assert "every hunk" in result.detail


def test_partly_contained_is_a_conflict(tmp_path: Path) -> None:
    # The build took the first hunk (say, an earlier backport) but not the second:
    # forward, the first would fail or apply twice; backward, the second fails.
    root = tree_with(tmp_path, BASE.replace("line 20\n", "line 20 fixed\n"))
    result = port.port(FIX, root)
    assert result.outcome is PortOutcome.CONFLICT
    assert [(h.hunk, bool(h.text)) for h in result.present] == [(1, False)]
    assert [(h.hunk, "+added" in h.text) for h in result.failed] == [(2, True)]
    assert "only partly" in result.detail
    with pytest.raises(PortConflictError):
        port.applied_diff(result)


def test_an_exact_match_is_not_taken_for_already_there(tmp_path: Path) -> None:
    # The file also holds a copy of hunk 1's fixed text elsewhere (say, a similar
    # function already fixed). Hunk 1 applies exactly where its old lines are:
    # it moved, it is not "partly there already".
    copy = "".join(f"line {i}\n" for i in range(17, 24)).replace("line 20\n", "line 20 fixed\n")
    result = port.port(FIX, tree_with(tmp_path, copy + BASE))
    assert result.outcome is PortOutcome.MOVED, result.to_dict()
    assert [(h.hunk, h.offset) for h in result.moved] == [(1, 7), (2, 7)]


def test_conflict_shows_the_hunk(tmp_path: Path) -> None:
    root = tree_with(tmp_path, BASE.replace("line 20\n", "line 20 rewritten\n"))
    result = port.port(FIX, root, release="r3")
    assert result.outcome is PortOutcome.CONFLICT
    ((failed),) = result.failed
    assert (failed.file, failed.commit, failed.hunk) == ("fs/x.c", 1, 1)
    assert "-line 20\n+line 20 fixed\n" in failed.text
    with pytest.raises(PortConflictError) as e:
        port.applied_diff(result)
    assert e.value.file == "fs/x.c"
    assert "+line 20 fixed" in e.value.hunk
    assert "fs/x.c, commit 1, hunk #1" in e.value.message
    assert e.value.to_dict()["error"] == "port-conflict"
    assert e.value.exit_code == 40


def test_missing_file_is_a_conflict(tmp_path: Path) -> None:
    root = tree_with(tmp_path, BASE, path="fs/other.c")
    result = port.port(FIX, root, release="r4")
    assert result.outcome is PortOutcome.CONFLICT
    assert "fs/x.c not in the source of r4" in result.detail
    assert [h.file for h in result.failed] == ["fs/x.c"]


def test_two_commits_in_order(tmp_path: Path) -> None:
    # The second commit changes a line the first one adds: order matters both ways.
    mid = BASE.replace("line 30\n", "line 30\nfirst\n")
    end = mid.replace("first\n", "first, then second\n")
    fix = Fix.parse(mbox(("add", udiff(BASE, mid)), ("amend", udiff(mid, end))))
    assert len(fix.commits) == 2
    forward = port.port(fix, tree_with(tmp_path / "a", BASE))
    assert forward.outcome is PortOutcome.CLEAN
    assert forward.diff.count("@@") == 2  # one hunk, from pristine to the end
    assert "+first, then second\n" in forward.diff
    assert "+first\n" not in forward.diff
    assert port.port(fix, tree_with(tmp_path / "b", end)).outcome is PortOutcome.CONTAINED
    # Only the first commit is in the build: the second applies, the first does not.
    partial = port.port(fix, tree_with(tmp_path / "c", mid))
    assert partial.outcome is PortOutcome.CONFLICT


def test_source_gone() -> None:
    result = port.source_gone("6.1.0-51-amd64")
    assert result.outcome is PortOutcome.SOURCE_GONE
    assert result.to_dict()["outcome"] == "source-gone"
    with pytest.raises(SourceGoneError) as e:
        port.applied_diff(result)
    assert e.value.release == "6.1.0-51-amd64"


def test_to_dict(tmp_path: Path) -> None:
    result = port.port(FIX, tree_with(tmp_path, "x\n" + BASE), release="r1")
    data = result.to_dict()
    assert data["format"] == 1
    assert data["outcome"] == "moved"
    assert data["moved"] == [
        {"file": "fs/x.c", "commit": 1, "hunk": 1, "offset": 1, "fuzz": 0},
        {"file": "fs/x.c", "commit": 1, "hunk": 2, "offset": 1, "fuzz": 0},
    ]
    assert "diff" not in data
