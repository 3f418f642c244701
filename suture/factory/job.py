"""One kernel build's way through a release: port, build, test, publish.

The job looks up what the repository already offers the build and channel,
ports each new fix to the build's exact source on its own (a fix the build
already contains is "fixed in build": nothing to patch, and the operator
learns the hosts on that build are not exposed), builds one cumulative level
from every fix released so far plus the new ones, tests it in a guest of the
build, and publishes it with the fix files.

Work survives an interruption: the bundle of a level is built into a folder
of the cache named by the build, the channel, the level and its fixes, and a
bundle there that passed its test is published without building or testing
again. Run as ``python -m suture.factory.job`` (what ``suture release`` does,
one process per build), it reads its spec as JSON on stdin and prints its
row as JSON on stdout; progress goes to stderr.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suture import bundle
from suture.builder import port
from suture.builder.pipeline import BuildRequest, build
from suture.builder.target import Target, open_target
from suture.errors import NoChangeError, SourceGoneError, SutureError
from suture.factory import ledger
from suture.factory.series import FixFile, as_series
from suture.fsutil import atomic_write, cache_dir
from suture.repo.contents import Contents
from suture.repo.publish import publish

FORMAT_VERSION = 1


@dataclass(frozen=True)
class JobSpec:
    """What one build's job does."""

    release: str
    repo: Path | None  # None: build only, into ``out_dir`` (``suture build`` of several builds)
    channel: str
    fixes: tuple[Path, ...]
    cves: tuple[str, ...] = ()  # added to the new fixes' own
    test_script: Path | None = None
    out_dir: Path | None = None
    build: dict[str, Any] = field(default_factory=dict)  # name, description, level, complete

    def to_json(self) -> str:
        """The spec as the job process reads it."""
        data = dataclasses.asdict(self)
        data.update(
            repo=str(self.repo) if self.repo else None,
            fixes=[str(p) for p in self.fixes],
            test_script=str(self.test_script) if self.test_script else None,
            out_dir=str(self.out_dir) if self.out_dir else None,
        )
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        """Read a spec written by :meth:`to_json`."""
        data = json.loads(text)

        def path(key: str) -> Path | None:
            return Path(data[key]) if data.get(key) else None

        return cls(
            release=data["release"],
            repo=path("repo"),
            channel=data["channel"],
            fixes=tuple(Path(p) for p in data["fixes"]),
            cves=tuple(data["cves"]),
            test_script=path("test_script"),
            out_dir=path("out_dir"),
            build=dict(data.get("build", {})),
        )


# What became of a build, one word each, in the order a job goes.
STATUSES = (
    "built",  # a bundle was built (``suture build`` of several builds: nothing is published)
    "published",  # a new level is live
    "up to date",  # the newest live level already holds every fix
    "fixed in build",  # the build's own source has every new fix: nothing to patch
    "source gone",  # the build's exact source is no longer in the archive
    "no change",  # the fixes change no code this build compiles
    "failed",  # a step failed: ``stage`` and ``reason`` say which and why
)


@dataclass
class Row:
    """What became of one build."""

    release: str
    status: str = "failed"
    stage: str = ""  # port, build, test, publish (where it stopped)
    reason: str = ""
    build_id: str = ""
    level: int | None = None
    ported: list[dict[str, Any]] = field(default_factory=list)  # per new fix
    functions: dict[str, list[str]] = field(default_factory=dict)
    tested: str = ""  # passed / failed / "" (not run)
    bundle: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def moved(self) -> bool:
        """Some new fix applied with an offset or fuzz (built, but flagged)."""
        return any(p["outcome"] == port.PortOutcome.MOVED.value for p in self.ported)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"format": FORMAT_VERSION, **dataclasses.asdict(self), "moved": self.moved}


def say(release: str, text: str) -> None:
    """A step of this build's job, on stderr."""
    print(f"suture: [{release}] {text}", file=sys.stderr, flush=True)


def run(spec: JobSpec) -> Row:
    """Take one build through the release; never raises for what a build can go through."""
    row = Row(spec.release)
    fixes = [FixFile(p.name, p.read_bytes()) for p in spec.fixes]
    started = time.monotonic()
    try:
        _run(spec, fixes, row)
    except SourceGoneError as e:
        row.status, row.reason = "source gone", e.message
    except NoChangeError as e:
        row.status, row.reason = "no change", e.message
    except SutureError as e:
        row.status, row.reason = "failed", e.message + (f" ({e.hint})" if e.hint else "")
    row.seconds["total"] = round(time.monotonic() - started, 1)
    return row


def _timed(row: Row, stage: str, since: float) -> None:
    row.seconds[stage] = round(time.monotonic() - since, 1)


def _run(spec: JobSpec, fixes: list[FixFile], row: Row) -> None:
    row.stage = "port"
    since = time.monotonic()
    say(spec.release, "fetching the build and preparing its exact source")
    from suture.lab.kallsyms import GuestKallsyms  # noqa: PLC0415 - the job's lab, not the CLI's

    target = open_target(spec.release, GuestKallsyms())
    row.build_id = target.build_id
    if spec.repo is None:
        _build_only(spec, target, fixes, row)
        return
    repo = spec.repo
    contents = Contents(repo)
    before = ledger.released(contents, spec.release, target.build_id, spec.channel)
    new = [f for f in fixes if not before.has(f.sha256)]
    if not new:
        row.status, row.level, row.stage = "up to date", before.latest, ""
        say(spec.release, f"level {before.latest} already holds every fix")
        return
    adding = _port(spec, target, new, row)
    _timed(row, "port", since)
    if not adding:
        row.status, row.stage = "fixed in build", ""
        return
    kept = ledger.fix_files(contents, before.fixes)
    level = before.highest_ever + 1
    _level(spec, target, repo, kept=kept, adding=adding, level=level, row=row)


def _build_only(spec: JobSpec, target: Target, fixes: list[FixFile], row: Row) -> None:
    """``suture build`` for one of several builds: the fix as given, into its own folder."""
    if not _port(spec, target, fixes, row):
        row.status, row.stage = "fixed in build", ""
        return
    row.stage = "build"
    since = time.monotonic()
    out = (spec.out_dir or Path()) / spec.release
    opts = spec.build
    (fix,) = spec.fixes
    report = build(
        BuildRequest(
            spec.release, fix, out, name=str(opts.get("name", "")), cves=spec.cves,
            description=str(opts.get("description", "")), level=int(opts.get("level", 1)),
            complete=bool(opts.get("complete", False)),
        ),
        target.positions,
    )  # fmt: skip
    _timed(row, "build", since)
    row.status, row.stage, row.bundle, row.functions = (
        "built",
        "",
        str(report.bundle),
        report.objects,
    )


def _port(spec: JobSpec, target: Target, new: list[FixFile], row: Row) -> list[FixFile]:
    """Each new fix ported on its own: those to add (clean or moved); raises on a conflict."""
    adding = []
    for fix in new:
        result = port.port(fix.parsed(), target.tree.path, release=spec.release)
        row.ported.append({"fix": fix.name, "sha256": fix.sha256, **result.to_dict()})
        say(spec.release, f"{fix.name}: {result.outcome.value}: {result.detail}")
        if result.outcome in (port.PortOutcome.CLEAN, port.PortOutcome.MOVED):
            adding.append(fix)
        elif result.outcome is not port.PortOutcome.CONTAINED:
            port.applied_diff(result)  # raises the conflict with its hunk
    return adding


def _level(
    spec: JobSpec,
    target: Target,
    repo: Path,
    *,
    kept: list[FixFile],
    adding: list[FixFile],
    level: int,
    row: Row,
) -> None:
    """Build, test and publish one level of ``kept`` plus ``adding``."""
    everything = kept + adding
    records = tuple(f.record() for f in kept) + tuple(f.record(spec.cves) for f in adding)
    name = f"suture_{spec.channel}_l{level}"
    work = _work_dir(spec, repo, target.build_id, level, everything)
    path = work / f"{name}.bundle"
    manifest = bundle.read_manifest(path) if path.exists() else None
    if manifest is None or manifest.test is None or not manifest.test.passed:
        row.stage = "build"
        since = time.monotonic()
        series = work / "series.mbox"
        atomic_write(series, as_series(everything))
        say(spec.release, f"building level {level} from {len(everything)} fix(es)")
        report = build(
            BuildRequest(
                spec.release, series, work, name=name,
                cves=tuple(dict.fromkeys(c for r in records for c in r.cves)),
                description="; ".join(r.subject for r in records), level=level, fixes=records,
            ),
            target.positions,
        )  # fmt: skip
        row.functions = report.objects
        _timed(row, "build", since)
        row.stage = "test"
        since = time.monotonic()
        manifest = _test(spec, path, row)
        _timed(row, "test", since)
    row.bundle, row.tested = str(path), manifest.test.result if manifest.test else ""
    row.functions = row.functions or {
        o.name: [f.name for f in o.functions] for o in manifest.objects
    }
    if not manifest.test or not manifest.test.passed:
        return
    row.stage = "publish"
    since = time.monotonic()
    result = publish(repo, path, spec.channel, fix_files={f.sha256: f.data for f in everything})
    _timed(row, "publish", since)
    row.status, row.stage, row.level = "published", "", result.manifest.level
    say(spec.release, f"published level {row.level} on {spec.channel}")


def _test(spec: JobSpec, path: Path, row: Row) -> bundle.Manifest:
    """Test the bundle in a guest of its build; the manifest with the result."""
    from suture.tester import runner  # noqa: PLC0415 - the lab's guest, only when testing

    say(spec.release, "testing the level in a guest of the build")
    report = runner.run(
        [path], spec.test_script, stdout=sys.stderr.buffer, log=lambda s: say(spec.release, s)
    )
    (tested,) = report.bundles
    if not tested.test.passed:
        row.reason = tested.test.reason or "the lab test failed"
    return tested.manifest


def _work_dir(
    spec: JobSpec, repo: Path, build_id: str, level: int, fixes: Sequence[FixFile]
) -> Path:
    """The cache folder of one level: the same inputs find the same folder when run again."""
    key = json.dumps(
        [str(repo.resolve()), spec.release, build_id, spec.channel, level,
         [f.sha256 for f in fixes], sorted(spec.cves)]
    )  # fmt: skip
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    work = cache_dir() / "factory" / f"{spec.release}-{spec.channel}-l{level}-{digest}"
    work.mkdir(parents=True, exist_ok=True)
    return work


def main(argv: Sequence[str] | None = None) -> int:
    """Run one job: the spec as JSON on stdin, the row as JSON on stdout."""
    del argv
    spec = JobSpec.from_json(sys.stdin.read())
    row = run(spec)
    print(json.dumps(row.to_dict()))
    return 0 if row.status != "failed" else 1


if __name__ == "__main__":
    sys.exit(main())
