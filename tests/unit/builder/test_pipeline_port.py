"""``suture build`` ports the fix first: outcomes, exit codes and JSON, on a synthetic tree.

The kernel and its prepared source are faked; the build stops before compiling.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from suture.builder import pipeline, source
from suture.builder.fix import Fix
from suture.builder.pipeline import BuildReport, BuildRequest
from suture.cli.main import main
from suture.errors import BuildError
from suture.packages import kernels
from tests.support.fixes import BASE, FIXED, mbox, udiff

RELEASE = "6.1.0-99-amd64"


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake prepared tree of RELEASE holding fs/x.c (BASE unless a test rewrites it)."""
    root = tmp_path / "source" / "linux"
    (root / "fs").mkdir(parents=True)
    (root / "fs/x.c").write_text(BASE)
    image = kernels.KernelTree(RELEASE, "6.1.999-1", tmp_path / "kernel")
    monkeypatch.setattr(kernels, "fetch", lambda release: image)
    monkeypatch.setattr(
        source, "prepare", lambda release: source.SourceTree(RELEASE, "6.1.999-1", root, "gcc-12")
    )
    return root


def run_build(tmp_path: Path, fix_text: str, *extra: str) -> int:
    fix = tmp_path / "fix.mbox"
    fix.write_text(fix_text)
    return main(["build", "--json", str(fix), "--kernel", RELEASE, "-o", str(tmp_path), *extra])


def test_fixed_in_this_build_exits_3(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tree / "fs/x.c").write_text(FIXED)
    code = run_build(tmp_path, mbox(("x: fix", udiff(BASE, FIXED))))
    assert code == 3
    data = json.loads(capsys.readouterr().out)
    assert data["error"] == "already-fixed"
    assert data["release"] == RELEASE
    assert (tree / "fs/x.c").read_text() == FIXED


def test_conflict_exits_40_with_the_hunk(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tree / "fs/x.c").write_text(BASE.replace("line 60\n", "line 60 (Debian)\n"))
    code = run_build(tmp_path, udiff(BASE, FIXED))
    assert code == 40
    data = json.loads(capsys.readouterr().out)
    assert data["error"] == "port-conflict"
    assert data["file"] == "fs/x.c"
    assert "+added" in data["hunk"]


def test_moved_hunks_warn_and_compile_the_build_exact_diff(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tree / "fs/x.c").write_text("debian\n" + BASE)
    seen: dict[str, str] = {}

    def compile_pair(tree_: source.SourceTree, fix: Path, work: Path, **kw: object) -> object:
        seen["diff"] = fix.read_text()
        raise BuildError("stop here")

    monkeypatch.setattr(pipeline, "compile_pair", compile_pair)
    code = run_build(tmp_path, udiff(BASE, FIXED))
    assert code == 40
    assert "@@ -18,7 +18,7 @@" in seen["diff"]  # the build's own line numbers
    err = capsys.readouterr().err
    assert "warning: applies with 2 of 2 hunks moved" in err
    assert "fs/x.c, commit 1, hunk #1 (offset +1)" in err


def test_build_files_are_refused_before_anything_is_fetched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_build(tmp_path, udiff("a\n", "b\n", "drivers/x/Makefile"))
    assert code == 40
    assert "only C files and headers" in capsys.readouterr().err


def test_cve_option_overrides_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[BuildRequest] = []

    def fake_build(req: BuildRequest, positions: object) -> BuildReport:
        seen.append(req)
        return BuildReport(RELEASE, tmp_path / "x.bundle", "x")

    monkeypatch.setattr(pipeline, "build", fake_build)
    text = mbox(("x: fix CVE-2025-0001", udiff(BASE, FIXED)))
    assert run_build(tmp_path, text, "--cve", "CVE-2099-0002") == 0
    assert run_build(tmp_path, text) == 0
    given, default = seen
    assert given.cves == ("CVE-2099-0002",)
    fix = Fix.parse(text)
    assert pipeline.with_fix_about(given, fix).cves == ("CVE-2099-0002",)
    about = pipeline.with_fix_about(default, fix)
    assert about.cves == ("CVE-2025-0001",)
    assert about.description == "x: fix CVE-2025-0001"
    described = pipeline.with_fix_about(
        BuildRequest(RELEASE, tmp_path / "f", tmp_path, description="mine"), fix
    )
    assert described.description == "mine"
