"""The agent's userspace levels: one cumulative level per library build, in running processes.

A library build (``libc.so.6`` of glibc 2.36-9+deb12u14, say) is named in the
repository as a kernel build is, by soname and GNU build id:
``<soname>/<build_id>/<channel>/<name>-L<level>.bundle`` with its level index
(:mod:`suture.repo.layout`). Each cycle the agent:

1. finds the library builds of this host: the files at the usual paths,
   and those that running processes map (containers may ship other builds);
2. asks the repository for the newest level of each, downloads a newer one
   verified, and applies it to every process that maps that build (a level
   replaces the one before it in each process);
3. applies the recorded level again to processes that lack it (processes
   started since; the daemon does this as they start, see
   :mod:`suture.userspace.watch`), and counts, per build, the processes
   patched, unpatched and refused (and why), for ``suture status`` and the check-in.

What was applied is kept in ``<state_dir>/userspace.json`` (format 1), beside
the kernel's ``state.json``, which it leaves alone::

    {"format": 1, "libraries": {"<build id>": {
        "soname": "libc.so.6", "level": 1, "name": "glibc_fix", "cves": ["CVE-..."],
        "bundle": "/var/lib/suture/bundles/glibc_fix-L1.bundle", "sha256": "<hex>",
        "applied_at": "<iso>", "processes": {"patched": 12, "unpatched": 0,
        "refused": {"init": 1}, "failed": 0, "at": "<iso>"}}}}

The userspace modules are imported only here and only when the agent has a
userspace level to deal with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from suture import timefmt
from suture.agent import quick
from suture.agent.config import AgentConfig
from suture.errors import AgentStateError, SutureError
from suture.fsutil import atomic_write

if TYPE_CHECKING:
    from suture.agent import update as agent_update
    from suture.userspace.patch import UserPatch

_log = logging.getLogger(__name__)

FORMAT_VERSION = 1
STATE_NAME = "userspace.json"
CHECKED_NAME = "userspace-checked.json"  # what the last full check looked at (see _unchanged)
# The libraries Suture builds userspace patches for, and where Debian installs them.
LIBRARIES = {
    "libc.so.6": Path("/lib/x86_64-linux-gnu/libc.so.6"),
    "libcrypto.so.3": Path("/usr/lib/x86_64-linux-gnu/libcrypto.so.3"),
}
# The cycle and the daemon's re-apply thread never ptrace one process at once.
LOCK = threading.Lock()


@dataclass(frozen=True)
class UserLevel:
    """The level applied to the processes of one library build."""

    soname: str
    build_id: str
    level: int
    name: str
    bundle: Path
    sha256: str = ""
    cves: tuple[str, ...] = ()
    applied_at: str = ""  # ISO 8601
    processes: dict[str, Any] = field(default_factory=dict)  # counts, see the module docstring

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (without the build id, the key it is stored under)."""
        return {
            "soname": self.soname, "level": self.level, "name": self.name,
            "cves": list(self.cves), "bundle": str(self.bundle), "sha256": self.sha256,
            "applied_at": self.applied_at, "processes": self.processes,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, build_id: str, data: dict[str, Any]) -> UserLevel:
        """Parse one entry.

        Raises:
            KeyError, TypeError, ValueError: malformed.
        """
        return cls(
            str(data["soname"]), build_id, int(data["level"]), str(data["name"]),
            Path(str(data["bundle"])), str(data.get("sha256", "")),
            tuple(str(c) for c in data.get("cves", [])), str(data.get("applied_at", "")),
            dict(data.get("processes", {})),
        )  # fmt: skip


def read(state_dir: Path) -> dict[str, UserLevel]:
    """The recorded levels by library build id (none when the file is missing or unreadable)."""
    try:
        data = json.loads((state_dir / STATE_NAME).read_text())
        if data.get("format") != FORMAT_VERSION:
            return {}
        return {k: UserLevel.from_dict(k, v) for k, v in dict(data["libraries"]).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def write(state_dir: Path, levels: dict[str, UserLevel]) -> None:
    """Record the levels, atomically.

    Raises:
        AgentStateError: the file cannot be written.
    """
    body = {"format": FORMAT_VERSION, "libraries": {k: v.to_dict() for k, v in levels.items()}}
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(state_dir / STATE_NAME, (json.dumps(body, indent=1) + "\n").encode())
    except OSError as e:
        raise AgentStateError(
            f"cannot write the userspace levels in {state_dir}: {e.strerror or e}",
            hint="check that the state folder is writable and its disk not full",
        ) from e


def library_builds() -> dict[str, str]:
    """Build id -> soname of every library build this host has or runs.

    The installed files first, then whatever processes map under one of the
    sonames (through ``/proc/PID/map_files``, so containers count).
    """
    from suture.userspace import procfs  # noqa: PLC0415 - see the module docstring

    found = {}
    for soname, path in LIBRARIES.items():
        if build_id := procfs.file_build_id(path):
            found[build_id] = soname
    cache: dict[tuple[int, str], str] = {}
    for pid in procfs.pids():
        for lib in procfs.libraries(pid, cache):
            soname = lib.path.rsplit("/", 1)[-1]
            if soname in LIBRARIES:
                found.setdefault(lib.build_id, soname)
    return found


def _now() -> str:
    return timefmt.utc()


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _counts(outcomes: dict[int, str], status_row: dict[str, Any] | None) -> dict[str, Any]:
    """The process counts of one build, from the live status row."""
    row = status_row or {}
    patched = sum(len(v) for v in dict(row.get("patched", {})).values())
    refused = {k: len(v) for k, v in dict(row.get("refused", {})).items()}
    failed = sum(1 for r in outcomes.values() if r in ("failed", "busy", "mismatch"))
    return {
        "patched": patched, "unpatched": len(row.get("unpatched", [])), "refused": refused,
        "failed": failed, "at": _now(),
    }  # fmt: skip


def _checked_key(config: AgentConfig, builds: dict[str, str]) -> list[str]:
    return [config.server, config.channel, *sorted(builds)]


def _unchanged(config: AgentConfig, builds: dict[str, str]) -> bool:
    """True when the last check of these builds still stands.

    Same server, channel and builds, and the repository serves the very
    timestamp verified then (:mod:`suture.agent.quick`'s reasoning): no TUF
    client is loaded.
    """
    try:
        memo = json.loads((config.state_dir / CHECKED_NAME).read_text())
        trusted = (config.state_dir / quick.TRUSTED / "timestamp.json").read_bytes()
        if memo != {"key": _checked_key(config, builds), "timestamp": _digest(trusted)}:
            return False
        now = datetime.now(UTC).timestamp()
        if quick._valid_until(trusted) <= now:
            return False
        served = quick._fetch(config, f"{config.server.rstrip('/')}/metadata/timestamp.json")
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return served == trusted


def _remember(config: AgentConfig, builds: dict[str, str]) -> None:
    try:
        trusted = (config.state_dir / quick.TRUSTED / "timestamp.json").read_bytes()
    except OSError:
        return
    memo = {"key": _checked_key(config, builds), "timestamp": _digest(trusted)}
    try:
        atomic_write(config.state_dir / CHECKED_NAME, json.dumps(memo).encode())
    except OSError as e:  # a shortcut only: without it, the next cycle checks again
        _log.warning("cannot write %s: %s", config.state_dir / CHECKED_NAME, e.strerror or e)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def update(
    config: AgentConfig,
    session: Callable[[], Any],
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """One userspace cycle: newer levels fetched and applied, every process brought to them.

    ``session`` opens the cycle's update session (:meth:`suture.agent.run.UpdateRun.session`);
    it is not opened when the repository and the library builds are as at the
    last check. Returns one row per library build that has a level (see
    :func:`rows`). A failure with one build is in its row; the others go on.
    """
    from suture.userspace import fleet  # noqa: PLC0415 - see the module docstring

    builds = library_builds()
    levels = read(config.state_dir)
    errors: dict[str, str] = {}
    fresh: set[str] = set()
    if not _unchanged(config, builds):
        with LOCK, session() as s:
            for build_id, soname in sorted(builds.items()):
                try:
                    offer = s.find_latest(soname, build_id, config.channel)
                    current = levels.get(build_id)
                    if offer is None or (current and offer.level <= current.level):
                        continue
                    levels[build_id] = _take(s, offer, current, config.state_dir, log)
                    fresh.add(build_id)
                except SutureError as e:
                    errors[build_id] = f"{e.code}: {e.message}"
                    log(f"userspace level for {soname} ({build_id[:12]}): {e.message}")
        if not errors:
            _remember(config, builds)
    if not levels:  # no userspace level for this host: nothing to apply or count
        return rows(levels, fresh, errors)
    outcomes: dict[str, dict[int, str]] = {}
    with LOCK:
        for build_id, lvl in levels.items():
            if build_id not in builds or not lvl.bundle.exists():
                continue
            # The new level everywhere, or the recorded one to processes started since.
            report = fleet.apply(lvl.bundle)
            outcomes[build_id] = {o.pid: o.result for o in report.outcomes}
        live = {r["build_id"]: r for r in fleet.status(list(levels))}
    for build_id, lvl in list(levels.items()):
        levels[build_id] = replace(
            lvl, processes=_counts(outcomes.get(build_id, {}), live.get(build_id))
        )
    write(config.state_dir, levels)
    return rows(levels, fresh, errors)


def _take(
    s: agent_update.UpdateSession,
    offer: agent_update.Offer,
    current: UserLevel | None,
    state_dir: Path,
    log: Callable[[str], None],
) -> UserLevel:
    """Download ``offer`` (verified, and checked to be a userspace patch of that build)."""
    from suture.bundle import read_manifest  # noqa: PLC0415 - the agent's import graph
    from suture.errors import WrongBuildError  # noqa: PLC0415

    path = s.download(offer, state_dir / "bundles")
    manifest = read_manifest(path)
    if manifest.kind != "userspace" or manifest.build_id != offer.build_id:
        path.unlink(missing_ok=True)
        raise WrongBuildError(
            f"{offer.path} is not a userspace patch of {offer.release} ({offer.build_id[:12]})",
            expected=offer.build_id,
            found=manifest.build_id,
            hint="refused; tell the repository's operators",
        )
    log(f"userspace level {offer.level} of {offer.release} ({offer.build_id[:12]}): {offer.name}")
    if current is not None and current.bundle != path:
        current.bundle.unlink(missing_ok=True)
    return UserLevel(
        offer.release, offer.build_id, offer.level, offer.name, path, _sha256(path),
        tuple(offer.cves), _now(),
    )  # fmt: skip


def rows(
    levels: dict[str, UserLevel],
    fresh: frozenset[str] | set[str] = frozenset(),
    errors: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One row per library build with a level: what the cycle's result and the check-in carry."""
    out = []
    errors = errors or {}
    for build_id, lvl in sorted(levels.items()):
        out.append({
            "soname": lvl.soname, "build_id": build_id, "level": lvl.level, "name": lvl.name,
            "cves": list(lvl.cves), "applied": build_id in fresh, "processes": lvl.processes,
            **({"error": errors[build_id]} if build_id in errors else {}),
        })  # fmt: skip
    for build_id, error in sorted(errors.items()):
        if build_id not in levels:
            out.append({"build_id": build_id, "level": 0, "error": error})
    return out


def checkin_rows(state_dir: Path) -> list[dict[str, Any]]:
    """The check-in's ``userspace`` field: per library build, level, CVEs and process counts.

    A CVE fixed in memory for some processes only is ``partial``: processes
    of that build run unpatched (refused, failed, or not reached yet).
    """
    out = []
    for build_id, lvl in sorted(read(state_dir).items()):
        p = lvl.processes
        left = int(p.get("unpatched", 0)) + sum(dict(p.get("refused", {})).values())
        left += int(p.get("failed", 0))
        patched = int(p.get("patched", 0))
        out.append({
            "soname": lvl.soname, "build_id": build_id, "level": lvl.level, "name": lvl.name,
            "cves": list(lvl.cves),
            "state": "patched" if patched and not left else ("partial" if patched else "unpatched"),
            "processes": {
                "patched": patched, "unpatched": int(p.get("unpatched", 0)),
                "refused": dict(p.get("refused", {})), "failed": int(p.get("failed", 0)),
            },
        })  # fmt: skip
    return out


def patches(state_dir: Path) -> list[UserPatch]:
    """The recorded levels as patches, for the re-apply of new processes (bad bundles skipped)."""
    from suture.userspace import patch as patch_file  # noqa: PLC0415

    out = []
    for lvl in read(state_dir).values():
        try:
            if lvl.sha256 and _sha256(lvl.bundle) != lvl.sha256:
                continue  # changed on disk since it was verified: not trusted
            out.append(patch_file.load(lvl.bundle))
        except (OSError, SutureError):
            continue
    return out


class Reapply:
    """The daemon's thread that patches processes as they start (:mod:`suture.userspace.watch`)."""

    def __init__(self, state_dir: Path, log: Callable[[str], None]) -> None:
        from suture.userspace import watch  # noqa: PLC0415

        self.state_dir = state_dir
        self.log = log
        self.stop = threading.Event()
        self.reapplier = watch.Reapplier(patches(state_dir), report=self._report, lock=LOCK)
        try:
            self.events: Any = watch.ExecEvents()
        except SutureError as e:
            log(f"{e.message}; new processes are patched by the /proc scan of each cycle")
            self.events = None
        self.thread = threading.Thread(target=self._run, name="suture-reapply", daemon=True)

    def _report(self, outcome: Any, after: float) -> None:
        if outcome.result not in ("patched", "already"):
            self.log(f"new process {outcome.pid}: {outcome.result}: {outcome.reason}")

    def _run(self) -> None:
        from suture.userspace import watch  # noqa: PLC0415

        # The cycle scans /proc itself; the thread only follows process starts.
        watch.watch(self.reapplier, self.stop.is_set, events=self.events, scan_every=1e9)

    def start(self) -> None:
        """Start listening (only when there is a level to re-apply or to come)."""
        self.thread.start()

    def refresh(self) -> None:
        """Take the levels the last cycle recorded."""
        self.reapplier.patches = patches(self.state_dir)

    def close(self) -> None:
        """Stop the thread."""
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        if self.events is not None:
            self.events.close()
