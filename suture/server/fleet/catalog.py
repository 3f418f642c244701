"""The levels the repository offers, read from its signed metadata: what the fleet view needs.

The server serves a repository it can read, so "which CVEs does level 3 of
build B fix" and "when was it published" come from the targets metadata
(the signed ``custom`` fields) and the level indexes, not from a second
source that could disagree. The catalog is read again when
``timestamp.json`` changes; each server process keeps its own copy, which
is only a cache of the files every process reads.

It also says whether the metadata loads and when each role expires, for
``/healthz`` and ``/metrics``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from suture import timefmt
from suture.bundle.labtest import signed_result
from suture.contract.index import BuildIndex
from suture.contract.targets import INDEX_NAME
from suture.errors import SutureError
from suture.repo.layout import Layout
from suture.repo.metadata import load

ROLES = ("root", "targets", "snapshot", "timestamp")


KINDS = ("kernel", "userspace")


@dataclass(frozen=True)
class LevelInfo:
    """One live (not yanked) level of one kernel build and channel, or of one library build.

    A library build's levels (``kind`` userspace) are named as a kernel's are:
    ``release`` is then the library's soname, ``build_id`` the library file's.
    """

    release: str
    build_id: str
    channel: str
    level: int
    name: str
    cves: tuple[str, ...]
    published: float | None  # unix time, s; None for levels signed before it was recorded
    tested: str = "untested"  # its signed lab test result: passed, failed or untested
    kind: str = "kernel"  # or "userspace" (see the class docstring)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "release": self.release,
            "build_id": self.build_id,
            "channel": self.channel,
            "level": self.level,
            "name": self.name,
            "cves": list(self.cves),
            "published": self.published,
            "tested": self.tested,
            "kind": self.kind,
        }


@dataclass(frozen=True)
class Metadata:
    """What the repository's metadata says of itself: loads or not, and when it expires."""

    error: str = ""  # why it does not load ("" when it does)
    expires: dict[str, float] = field(default_factory=dict)  # role -> unix time


Key = tuple[str, str, str]  # (release, build id, channel)


class Catalog:
    """Levels by (release, build id, channel), ascending; read again when timestamp.json changes."""

    def __init__(self, layout: Layout) -> None:
        self._layout = layout
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._levels: dict[Key, list[LevelInfo]] = {}
        self._metadata = Metadata(error="not read yet")

    def levels(self, release: str, build_id: str, channel: str) -> list[LevelInfo]:
        """The live levels of one build and channel, ascending (empty: none)."""
        return list(self._current()[0].get((release, build_id, channel), ()))

    def all(self) -> list[LevelInfo]:
        """Every live level of every build and channel."""
        return [lv for group in self._current()[0].values() for lv in group]

    def by_build(self) -> dict[Key, list[LevelInfo]]:
        """Every live level, by build and channel."""
        return {k: list(v) for k, v in self._current()[0].items()}

    def metadata(self) -> Metadata:
        """Whether the metadata loads, and when each role expires."""
        return self._current()[1]

    def _current(self) -> tuple[dict[Key, list[LevelInfo]], Metadata]:
        path = self._layout.metadata / "timestamp.json"
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError as e:
            return {}, Metadata(error=f"{path}: {e.strerror}")
        with self._lock:
            if stamp != self._stamp:
                self._levels, self._metadata = _read(self._layout)
                self._stamp = stamp
            return self._levels, self._metadata


def _read(layout: Layout) -> tuple[dict[Key, list[LevelInfo]], Metadata]:
    try:
        state = load(layout)
    except SutureError as e:
        return {}, Metadata(error=e.message)  # an empty or broken repository offers nothing
    expires = {role: state.role(role).signed.expires.timestamp() for role in ROLES}
    targets = state.targets.signed.targets
    found: dict[Key, list[LevelInfo]] = {}
    for path, target in targets.items():
        if not path.endswith("/" + INDEX_NAME):
            continue
        try:
            (stored,) = target.get_prefixed_paths()
            index = BuildIndex.from_json((layout.targets / stored).read_bytes())
        except (OSError, ValueError):
            continue
        key = (index.release, index.build_id, index.channel)
        for entry in index.levels:
            t = targets.get(entry.path)
            custom = t.custom if t is not None and isinstance(t.custom, dict) else {}
            found.setdefault(key, []).append(
                LevelInfo(
                    *key,
                    level=entry.level,
                    name=str(custom.get("name", "")),
                    cves=tuple(str(c) for c in custom.get("cves", [])),
                    published=_time(custom.get("published")),
                    tested=signed_result(custom.get("test")),
                    kind="userspace" if custom.get("kind") == "userspace" else "kernel",
                )
            )
    for group in found.values():
        group.sort(key=lambda lv: lv.level)
    return found, Metadata(expires=expires)


def _time(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return timefmt.parse(value)
    except ValueError:
        return None
