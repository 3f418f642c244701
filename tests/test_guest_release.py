"""`suture release` of a real fix across real Debian 12 builds: each outcome where it belongs.

The fix is a stable fix Debian shipped in 6.1.190-1 (examples/sockmap-max-entries.patch),
with a test script that fails without it. The builds are chosen from the
archive at run time: the newest one (its source has the fix: "fixed in
build"), the newest older than 6.1.190 whose source is still there (built,
tested in its own guest with the script, published), and one whose source
left the archive, if any ("source gone"). As old builds leave the archive
the middle one may disappear; the test then checks the others.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from suture.cli.main import main
from suture.packages import sets
from tests.support.guest import require_qemu

pytestmark = pytest.mark.guest

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "examples" / "sockmap-max-entries.patch"
TEST = ROOT / "examples" / "sockmap-max-entries.test.sh"
FIXED_IN = (6, 1, 190)  # the first upstream version whose Debian source has the fix


def upstream(version: str) -> tuple[int, ...]:
    """``6.1.187-1`` -> (6, 1, 187)."""
    return tuple(int(x) for x in version.split("-", 1)[0].split(".")[:3])


def chosen() -> dict[str, str]:
    """Build -> the outcome it must have."""
    builds = sets.describe(sets.set_releases("debian12"))
    with_source = [b for b in builds if b.source_available]
    picks = {with_source[-1].release: "fixed in build"}
    older = [b for b in with_source if upstream(b.image_version) < FIXED_IN]
    if older:
        picks[older[-1].release] = "published"
    gone = [b for b in builds if not b.source_available]
    if gone:
        picks[gone[-1].release] = "source gone"
    return picks


def test_release_of_a_real_fix_across_builds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_qemu()
    expected = chosen()
    repo = tmp_path / "repo"
    assert main(["repo", "init", str(repo)]) == 0
    capsys.readouterr()
    argv = ["--json", "release", str(FIX), "--repo", str(repo), "--test", str(TEST)]
    for release in expected:
        argv += ["--kernel", release]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    got = {row["release"]: row for row in report["builds"]}
    assert {r: got[r]["status"] for r in expected} == expected, report
    for release, status in expected.items():
        row = got[release]
        if status == "published":
            assert (row["level"], row["tested"]) == (1, "passed"), row
            assert row["ported"][0]["outcome"] in ("clean", "moved")
            assert row["functions"] == {"vmlinux": ["sock_map_alloc"]}
        elif status == "fixed in build":
            assert row["ported"][0]["outcome"] == "contained"
    # Again with the same inputs: nothing to redo.
    capsys.readouterr()
    assert main(argv) == 0
    again = {r["release"]: r["status"] for r in json.loads(capsys.readouterr().out)["builds"]}
    assert again == {r: "up to date" if s == "published" else s for r, s in expected.items()}
