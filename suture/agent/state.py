"""The agent's memory between runs: ``<state_dir>/state.json``, written atomically.

Format 1::

    {"format": 1,
     "applied": {"level": 2, "patch": "fix_x", "bundle": "/var/lib/suture/bundles/fix_x-L2.bundle",
                 "release": "6.1.0-56-amd64", "build_id": "<hex>",
                 "applied_at": "2026-11-25T19:00:00Z", "boot_id": "<uuid>",
                 "confirmed": false, "sha256": "<hex>", "cves": ["CVE-2026-0001"]},
     "in_progress": {"level": 3, "patch": "fix_x", "bundle": "...",
                     "started_at": "2026-11-25T20:00:00Z"},
     "seen": {"level": 3, "at": "2026-11-25T20:00:00Z"},
     "last_check": {"at": "2026-11-25T20:00:00Z", "result": "applied",
                    "error": {"error": "FetchError", "message": "...", "hint": "..."}},
     "held": {"level": 2, "patch": "fix_x", "release": "...", "build_id": "...",
              "reason": "...", "at": "..."},
     "clean_shutdown_boot": "<uuid>",
     "last_report": {"at": "...", "error": null},
     "attempted_level": 3, "directive": {"max_level": 3, "unroll": false},
     "offered": {"key": ["<server>", "stable", "None", "<release>", "<build id>"],
                 "level": 2, "name": "fix_x", "cves": ["CVE-2026-0001"], "tested": "passed"},
     "withdrawn": [{"release": "...", "build_id": "...", "level": 3}]}

``applied`` is null until a level was applied, ``in_progress`` is set only
while the engine is applying (a leftover one means that run was killed),
``seen`` is the newest level the agent has met (for ``update_delay_hours``),
``error`` is null when the last check succeeded. ``confirmed``, ``held`` and
``clean_shutdown_boot`` belong to the crash-loop guard (:mod:`suture.agent.guard`);
``offered`` lets a no-change check skip the TUF client (:mod:`suture.agent.quick`);
``held`` is null unless a level is kept from being applied. ``withdrawn``
lists the levels the agent saw yanked from the repository (newest last, at
most :data:`MAX_WITHDRAWN`): it never applies them again, not even at boot.
Keys added after
the first release of format 1 are optional when read. One agent at a time:
every read-modify-write holds :func:`locked`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suture import jsontypes, timefmt
from suture.errors import AgentStateError
from suture.fsutil import atomic_write
from suture.fsutil import locked as _flock
from suture.jsontypes import as_int, as_str

FORMAT_VERSION = 1
STATE_NAME = "state.json"
LOCK_NAME = ".lock"
BUNDLES = "bundles"
MAX_WITHDRAWN = 64  # yanked levels remembered; older ones belong to kernels long gone


@dataclass(frozen=True)
class Applied:
    """The level live on this host's kernel, as the agent applied it."""

    level: int
    patch: str  # the livepatch (module) name
    bundle: Path  # the cached copy under state_dir/bundles
    release: str  # the kernel it was applied on
    build_id: str
    applied_at: float  # unix time, s
    boot_id: str = ""  # /proc/sys/kernel/random/boot_id when it was applied
    confirmed: bool = False  # the host stayed up for the crash guard's time since
    sha256: str = ""  # of the cached bundle, checked before a re-apply at boot
    cves: tuple[str, ...] = ()  # what the level fixes (cumulative)


@dataclass(frozen=True)
class Offered:
    """The newest level the last full check found, and what that answer depended on.

    ``key`` is :func:`suture.agent.quick.offered_key`: server, channel, sticky
    level and kernel build. While it and the repository's timestamp are
    unchanged, so is the offer.
    """

    key: tuple[str, ...]
    level: int
    name: str
    cves: tuple[str, ...] = ()
    tested: str = ""  # its signed test result ("": recorded before results were signed)


@dataclass(frozen=True)
class Held:
    """A level the crash-loop guard keeps from being applied until an operator clears it."""

    level: int
    patch: str
    release: str  # the kernel build the level is for
    build_id: str
    reason: str
    at: float  # unix time, s


@dataclass(frozen=True)
class Withdrawn:
    """A level the repository withdrew (``suture repo yank``) while the agent watched."""

    release: str
    build_id: str
    level: int


@dataclass(frozen=True)
class InProgress:
    """A level the engine was applying when the state was last written."""

    level: int
    patch: str
    bundle: Path
    started_at: float  # unix time, s


@dataclass(frozen=True)
class AgentState:
    """Everything the agent remembers; see the module docstring for the file."""

    applied: Applied | None = None
    in_progress: InProgress | None = None
    seen_level: int = 0  # the newest level offered so far (0: none)
    seen_at: float | None = None  # unix time, s, when seen_level was first offered
    last_check: float | None = None  # unix time, s
    last_result: str = ""  # an Outcome value, or "error"
    last_error: dict[str, str] | None = field(default=None)  # SutureError.to_dict()
    held: Held | None = None
    clean_shutdown_boot: str = ""  # boot id of the last boot whose daemon stopped cleanly
    last_report: float | None = None  # unix time, s, of the last check-in attempt
    last_report_error: str | None = None  # why it failed; None when it was accepted
    offered: Offered | None = None  # the last full check's newest level (None: none, or unknown)
    attempted_level: int = 0  # the level the last cycle set out to apply (reported to the server)
    max_level: int | None = None  # the fleet server's cap for this host (None: no cap)
    unroll: bool = False  # the server sends hosts back to max_level (a downgrade)
    withdrawn: tuple[Withdrawn, ...] = ()  # yanked levels seen; never applied again

    def level_for(self, release: str, build_id: str) -> int:
        """The level applied on exactly this kernel build (0: none, or another kernel)."""
        a = self.applied
        return a.level if a and (a.release, a.build_id) == (release, build_id) else 0

    def live_level(self, release: str, build_id: str, live: set[str]) -> int:
        """The level live in memory: applied on exactly this build, its patch still enabled.

        The one rule for "the live level" (reports, metrics, status, uname,
        the update cycle): after a reboot or ``suture unload`` the record
        stays, but nothing is live.

        Args:
            release: the running kernel's release.
            build_id: its build id.
            live: the names of the enabled live patches.
        """
        a = self.applied
        level = self.level_for(release, build_id)
        return level if level and a and a.patch in live else 0

    def is_withdrawn(self, release: str, build_id: str, level: int) -> bool:
        """True when the agent saw this level of this build yanked."""
        return Withdrawn(release, build_id, level) in self.withdrawn

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (format 1)."""
        a, p = self.applied, self.in_progress
        return {
            "format": FORMAT_VERSION,
            "applied": a
            and {
                "level": a.level,
                "patch": a.patch,
                "bundle": str(a.bundle),
                "release": a.release,
                "build_id": a.build_id,
                "applied_at": _iso(a.applied_at),
                "boot_id": a.boot_id,
                "confirmed": a.confirmed,
                "sha256": a.sha256,
                "cves": list(a.cves),
            },
            "in_progress": p
            and {
                "level": p.level,
                "patch": p.patch,
                "bundle": str(p.bundle),
                "started_at": _iso(p.started_at),
            },
            "seen": {"level": self.seen_level, "at": _iso(self.seen_at)},
            "last_check": {
                "at": _iso(self.last_check),
                "result": self.last_result,
                "error": self.last_error,
            },
            "held": self.held
            and {
                "level": self.held.level,
                "patch": self.held.patch,
                "release": self.held.release,
                "build_id": self.held.build_id,
                "reason": self.held.reason,
                "at": _iso(self.held.at),
            },
            "clean_shutdown_boot": self.clean_shutdown_boot,
            "last_report": {"at": _iso(self.last_report), "error": self.last_report_error},
            "attempted_level": self.attempted_level,
            "directive": {"max_level": self.max_level, "unroll": self.unroll},
            "offered": self.offered
            and {
                "key": list(self.offered.key),
                "level": self.offered.level,
                "name": self.offered.name,
                "cves": list(self.offered.cves),
                "tested": self.offered.tested,
            },
            "withdrawn": [
                {"release": w.release, "build_id": w.build_id, "level": w.level}
                for w in self.withdrawn
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentState:
        """Parse the JSON form.

        Raises:
            ValueError: another format, or a field is missing or of the wrong type.
        """
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(f"not an agent state of format {FORMAT_VERSION}")
        try:
            a, p = data["applied"], data["in_progress"]
            seen, check = data["seen"], data["last_check"]
            error = _error(check["error"])
            h = data.get("held")
            report = _object(data.get("last_report") or {})
            o = data.get("offered")
            directive = _object(data.get("directive") or {})
            cap = directive.get("max_level")
            return cls(
                applied=a
                and Applied(
                    level=as_int(a["level"]),
                    patch=as_str(a["patch"]),
                    bundle=Path(as_str(a["bundle"])),
                    release=as_str(a["release"]),
                    build_id=as_str(a["build_id"]),
                    applied_at=_time(a["applied_at"]) or 0.0,
                    boot_id=as_str(a.get("boot_id", "")),
                    confirmed=a.get("confirmed", False) is True,
                    sha256=as_str(a.get("sha256", "")),
                    cves=tuple(as_str(c) for c in a.get("cves", [])),
                ),
                in_progress=p
                and InProgress(
                    level=as_int(p["level"]),
                    patch=as_str(p["patch"]),
                    bundle=Path(as_str(p["bundle"])),
                    started_at=_time(p["started_at"]) or 0.0,
                ),
                seen_level=as_int(seen["level"]),
                seen_at=_time(seen["at"]),
                last_check=_time(check["at"]),
                last_result=as_str(check["result"]),
                last_error=error,
                held=h
                and Held(
                    level=as_int(h["level"]),
                    patch=as_str(h["patch"]),
                    release=as_str(h["release"]),
                    build_id=as_str(h["build_id"]),
                    reason=as_str(h["reason"]),
                    at=_time(h["at"]) or 0.0,
                ),
                clean_shutdown_boot=as_str(data.get("clean_shutdown_boot", "")),
                last_report=_time(report.get("at")),
                last_report_error=None if report.get("error") is None else as_str(report["error"]),
                attempted_level=as_int(data.get("attempted_level", 0)),
                max_level=None if cap is None else as_int(cap),
                unroll=directive.get("unroll", False) is True,
                offered=o
                and Offered(
                    key=tuple(as_str(k) for k in o["key"]),
                    level=as_int(o["level"]),
                    name=as_str(o["name"]),
                    cves=tuple(as_str(c) for c in o["cves"]),
                    tested=as_str(o.get("tested", "")),
                ),
                withdrawn=tuple(
                    Withdrawn(as_str(w["release"]), as_str(w["build_id"]), as_int(w["level"]))
                    for w in data.get("withdrawn", [])
                ),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"malformed agent state: {e!r}") from e


def read(state_dir: Path) -> AgentState:
    """The state in ``state_dir``; the empty state when there is no file yet.

    Raises:
        AgentStateError: the file cannot be read or is not a valid state.
    """
    path = state_dir / STATE_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return AgentState()
    except OSError as e:
        raise AgentStateError(
            f"cannot read the agent state {path}: {e.strerror}",
            hint="run the agent as root, or point --state-dir at a folder it can read",
        ) from e
    try:
        return AgentState.from_dict(_object(jsontypes.loads(raw)))
    except (ValueError, TypeError) as e:
        raise AgentStateError(
            f"the agent state {path} is damaged: {e}",
            hint="move it aside; the agent starts afresh (check `suture status` first)",
        ) from e


def write(state_dir: Path, state: AgentState) -> None:
    """Replace the state file atomically (readers see the old or the new state).

    Raises:
        AgentStateError: the file cannot be written.
    """
    data = json.dumps(state.to_dict(), indent=1, sort_keys=True).encode() + b"\n"
    try:
        atomic_write(state_dir / STATE_NAME, data)
    except OSError as e:
        raise AgentStateError(
            f"cannot write the agent state in {state_dir}: {e.strerror}",
            hint="check that the state folder is writable and its disk not full",
        ) from e


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Hold ``state_dir/.lock``: one agent (daemon or command) changes the host at a time.

    Raises:
        AgentStateError: the lock file cannot be created.
    """
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(_flock(state_dir / LOCK_NAME))
        except OSError as e:
            raise AgentStateError(
                f"cannot lock the agent state in {state_dir}: {e.strerror}",
                hint="run the agent as root, or point --state-dir at a writable folder",
            ) from e
        yield


def effective_release(release: str, build_id: str, state: AgentState, live: set[str]) -> str:
    """``release`` with ``+suture.L<level>`` when a level is live on exactly this build.

    The level counts only while its patch is still enabled in the kernel
    (``live``: names of enabled live patches), so after a reboot, or an
    ``unload``, this is the plain release again.
    """
    level = state.live_level(release, build_id, live)
    return f"{release}+suture.L{level}" if level else release


def _iso(t: float | None) -> str | None:
    return None if t is None else timefmt.utc(t)


def _time(value: Any) -> float | None:
    return None if value is None else timefmt.parse(as_str(value))


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object, got {value!r}")
    return value


def _error(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    return {as_str(k): as_str(v) for k, v in _object(value).items()}
