"""The patch factory on the host: fix series, the repository ledger, release rows and tables.

The per-build jobs themselves run on real builds in tests/test_guest_factory.py;
here the release runs with a fake job runner, and the ledger reads a real
repository with fake bundles.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import threading
from pathlib import Path
from typing import IO

import pytest

from suture import bundle
from suture.bundle import FixRecord
from suture.errors import UsageError
from suture.factory import ledger
from suture.factory.job import JobSpec, Row
from suture.factory.release import ReleaseRequest, release, table
from suture.factory.series import FixFile, as_series, read_fixes
from suture.repo.contents import Contents
from suture.repo.create import init
from suture.repo.publish import publish
from tests.support.repo import BUILD_A, RELEASE, make_bundle

DIFF = b"--- a/fs/x.c\n+++ b/fs/x.c\n@@ -1 +1 @@\n-a\n+b\n"
MAIL = (
    b"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
    b"From: A <a@example.org>\nSubject: [PATCH] x: fix it (CVE-2026-1234)\n\n"
    b"text\n---\n--- a/fs/y.c\n+++ b/fs/y.c\n@@ -1 +1 @@\n-a\n+b\n"
)


def test_series_puts_plain_diffs_into_mails(tmp_path: Path) -> None:
    (tmp_path / "one.patch").write_bytes(DIFF)
    (tmp_path / "two.mbox").write_bytes(MAIL)
    fixes = read_fixes([tmp_path / "one.patch", tmp_path / "two.mbox"])
    series = as_series(fixes)
    parsed = FixFile("series", series).parsed()
    assert [c.subject for c in parsed.commits] == ["one.patch", "x: fix it (CVE-2026-1234)"]
    assert sorted(parsed.files) == ["fs/x.c", "fs/y.c"]
    record = fixes[1].record(("CVE-2026-9999",))
    assert record == FixRecord(
        hashlib.sha256(MAIL).hexdigest(), "x: fix it (CVE-2026-1234)",
        ("CVE-2026-1234", "CVE-2026-9999"),
    )  # fmt: skip


def test_the_same_fix_twice_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.patch").write_bytes(DIFF)
    (tmp_path / "b.patch").write_bytes(DIFF)
    with pytest.raises(UsageError, match="given twice"):
        read_fixes([tmp_path / "a.patch", tmp_path / "b.patch"])


def test_ledger_reads_the_newest_levels_fixes(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    init(repo)
    contents = Contents(repo)
    assert ledger.released(contents, RELEASE, BUILD_A, "stable") == ledger.Released(0, None, ())
    fix = FixFile("one.patch", DIFF)
    path = make_bundle(tmp_path, 1)
    manifest = bundle.read_manifest(path)
    with bundle.opened(path) as (_, ko):
        module = ko.read_bytes()
    bundle.write(path, dataclasses.replace(manifest, fixes=(fix.record(),)), module)
    with pytest.raises(UsageError, match="neither given nor in the repository"):
        publish(repo, path)
    publish(repo, path, fix_files={fix.sha256: fix.data})
    contents = Contents(repo)
    now = ledger.released(contents, RELEASE, BUILD_A, "stable")
    assert (now.highest_ever, now.latest, now.has(fix.sha256)) == (1, 1, True)
    (back,) = ledger.fix_files(contents, now.fixes)
    assert back.data == DIFF


def fake_runner(rows: dict[str, Row]) -> object:
    def run(spec: JobSpec, err: IO[str], lock: threading.Lock) -> Row:
        with lock:
            err.write(f"suture: [{spec.release}] working\n")
        return rows[spec.release]

    return run


def test_release_gathers_one_row_per_build_in_order(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    init(repo)
    (tmp_path / "fix.patch").write_bytes(DIFF)
    rows = {
        "6.1.0-47-amd64": Row("6.1.0-47-amd64", "published", level=1, tested="passed",
                              bundle="b", ported=[{"outcome": "moved"}]),
        "6.1.0-48-amd64": Row("6.1.0-48-amd64", "source gone", reason="no linux-source"),
        "6.1.0-57-amd64": Row("6.1.0-57-amd64", "fixed in build",
                              ported=[{"outcome": "contained"}]),
    }  # fmt: skip
    err = io.StringIO()
    report = release(
        ReleaseRequest((tmp_path / "fix.patch",), tuple(rows), repo, jobs=2),
        err=err, run_job=fake_runner(rows),  # type: ignore[arg-type]
    )  # fmt: skip
    assert [r.release for r in report.rows] == list(rows)
    assert report.ok
    assert err.getvalue().count("working") == 3
    text = table(report).splitlines()
    assert text[0].split() == ["build", "ported", "built", "tested", "published", "outcome"]
    assert "moved (fuzz)" in text[1] and "L1" in text[1] and "passed" in text[1]
    assert "source gone: no linux-source" in text[2]
    assert "contained" in text[3] and "fixed in build" in text[3]
    data = report.to_dict()
    assert data["format"] == 1 and data["builds"][0]["moved"] is True


def test_release_refuses_a_folder_that_is_no_repository(tmp_path: Path) -> None:
    (tmp_path / "fix.patch").write_bytes(DIFF)
    with pytest.raises(Exception, match="repo"):
        release(ReleaseRequest((tmp_path / "fix.patch",), ("6.1.0-57-amd64",), tmp_path / "none"))


def test_a_failed_build_makes_the_release_not_ok(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    init(repo)
    (tmp_path / "fix.patch").write_bytes(DIFF)
    rows = {"6.1.0-57-amd64": Row("6.1.0-57-amd64", "failed", stage="test", reason="oops")}
    report = release(
        ReleaseRequest((tmp_path / "fix.patch",), tuple(rows), repo),
        err=io.StringIO(), run_job=fake_runner(rows),  # type: ignore[arg-type]
    )  # fmt: skip
    assert not report.ok
    assert "failed at test: oops" in table(report)


def test_job_spec_round_trips(tmp_path: Path) -> None:
    spec = JobSpec("6.1.0-57-amd64", tmp_path / "repo", "testing", (tmp_path / "f.patch",),
                   ("CVE-1",), tmp_path / "t.sh")  # fmt: skip
    assert JobSpec.from_json(spec.to_json()) == spec
    only = JobSpec("6.1.0-57-amd64", None, "stable", (tmp_path / "f",), out_dir=tmp_path,
                   build={"name": "x", "level": 2})  # fmt: skip
    assert JobSpec.from_json(only.to_json()) == only
