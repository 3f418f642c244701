"""``suture release``: fixes ported, built, tested and published for every build asked for.

Each build is one job (:mod:`suture.factory.job`) in a process of its own,
as many side by side as there are cores: the jobs share nothing but the
repository, whose lock orders their publishing. Each job's progress comes
through prefixed with its build; its row comes back as JSON. A job that
dies is a failed row, never a missing one.

Run again with the same inputs, a release skips what is done: builds whose
newest level holds every fix are "up to date", and a level built and tested
before an interruption is published without building or testing again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from suture.factory.job import FORMAT_VERSION, JobSpec, Row
from suture.factory.series import read_fixes
from suture.repo.contents import Contents


@dataclass(frozen=True)
class ReleaseRequest:
    """What ``suture release`` was asked for."""

    fixes: tuple[Path, ...]
    releases: tuple[str, ...]  # resolved builds, in order
    repo: Path
    channel: str = "stable"
    cves: tuple[str, ...] = ()
    test_script: Path | None = None
    jobs: int = 0  # builds side by side (0: one per core)


@dataclass(frozen=True)
class ReleaseReport:
    """One row per build, in the order asked."""

    rows: tuple[Row, ...]

    @property
    def ok(self) -> bool:
        """No build failed ("fixed in build", "source gone", "no change" are outcomes)."""
        return all(r.status != "failed" for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"format": FORMAT_VERSION, "ok": self.ok, "builds": [r.to_dict() for r in self.rows]}


def _job_argv() -> list[str]:
    return [sys.executable, "-m", "suture.factory.job"]


def _run_job(spec: JobSpec, err: IO[str], lock: threading.Lock) -> Row:
    """One job in a process of its own; its stderr comes through as it goes."""
    proc = subprocess.Popen(
        _job_argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, errors="replace",
    )  # fmt: skip
    stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
    if stdin is None or stdout is None or stderr is None:  # pragma: no cover - PIPE gives them
        raise RuntimeError("the job's pipes are missing")
    stdin.write(spec.to_json())
    stdin.close()
    tail: list[str] = []
    for line in stderr:
        tail = [*tail[-19:], line]
        with lock:
            err.write(_prefixed(spec.release, line))
            err.flush()
    out = stdout.read()
    proc.wait()
    try:
        data = json.loads(out.strip().splitlines()[-1])
        return Row(**{k: v for k, v in data.items() if k not in ("format", "moved")})
    except (ValueError, IndexError, TypeError):
        reason = f"the job ended with status {proc.returncode}: {''.join(tail[-5:]).strip()}"
        return Row(spec.release, status="failed", stage="job", reason=reason)


def _prefixed(release: str, line: str) -> str:
    """A job's line with its build in front: ``suture: [6.1.0-57-amd64] ...``."""
    if line.startswith(f"suture: [{release}]"):
        return line
    return f"suture: [{release}] {line.removeprefix('suture: ')}"


JobRunner = Callable[[JobSpec, IO[str], threading.Lock], Row]


def release(
    req: ReleaseRequest, *, err: IO[str] | None = None, run_job: JobRunner = _run_job
) -> ReleaseReport:
    """Run one job per build, side by side, and gather their rows.

    Raises:
        UsageError, BuildError: a fix file cannot be read or is no diff (nothing ran).
        NotARepoError: the repository cannot be read (nothing ran).
    """
    read_fixes(list(req.fixes))  # refuse what is no fix before any build starts
    Contents(req.repo)  # and a folder that is no repository
    specs = [
        JobSpec(
            r, req.repo.resolve(), req.channel, tuple(p.resolve() for p in req.fixes),
            req.cves, req.test_script.resolve() if req.test_script else None,
        )
        for r in req.releases
    ]  # fmt: skip
    return ReleaseReport(_side_by_side(specs, req.jobs, err or sys.stderr, run_job))


def build_many(
    fix: Path,
    releases: Sequence[str],
    out_dir: Path,
    options: dict[str, Any],
    *,
    cves: tuple[str, ...] = (),
    jobs: int = 0,
    err: IO[str] | None = None,
    run_job: JobRunner = _run_job,
) -> ReleaseReport:
    """``suture build`` for several builds: a bundle each, in ``out_dir/<release>/``.

    Raises:
        UsageError, BuildError: the fix file cannot be read or is no diff (nothing ran).
    """
    read_fixes([fix])
    specs = [
        JobSpec(r, None, "stable", (fix.resolve(),), cves, out_dir=out_dir.resolve(), build=options)
        for r in releases
    ]
    return ReleaseReport(_side_by_side(specs, jobs, err or sys.stderr, run_job))


def _side_by_side(
    specs: Sequence[JobSpec], jobs: int, err: IO[str], run_job: JobRunner
) -> tuple[Row, ...]:
    lock = threading.Lock()
    workers = jobs or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(specs)))) as pool:
        return tuple(pool.map(lambda s: run_job(s, err, lock), specs))


_COLUMNS = ("build", "ported", "built", "tested", "published", "outcome")
_BUILD_COLUMNS = ("build", "ported", "bundle", "outcome")


def table(report: ReleaseReport, *, published: bool = True) -> str:
    """The report as a table, one row per build (``published``: a release's columns)."""
    columns = _COLUMNS if published else _BUILD_COLUMNS
    lines = [_cells(r) for r in report.rows]
    if not published:
        lines = [
            (c[0], c[1], r.bundle or "-", c[-1]) for c, r in zip(lines, report.rows, strict=True)
        ]
    widths = [max(len(c[i]) for c in [columns, *lines]) for i in range(len(columns) - 1)]
    out = []
    for cells in [columns, *lines]:
        head = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False))
        out.append(f"{head}  {cells[-1]}".rstrip())
    return "\n".join(out)


def _cells(row: Row) -> Sequence[str]:
    outcomes = sorted({p["outcome"] for p in row.ported})
    ported = "/".join(outcomes) if outcomes else ("-" if row.status != "up to date" else "done")
    if row.moved:
        ported += " (fuzz)"
    built = "yes" if row.bundle else "-"
    tested = row.tested or "-"
    published = f"L{row.level}" if row.level is not None else "-"
    outcome = row.status + (f" at {row.stage}: {row.reason}" if row.status == "failed" else "")
    if row.status in ("source gone", "no change") and row.reason:
        outcome += f": {row.reason}"
    return (row.release, ported, built, tested, published, outcome)
