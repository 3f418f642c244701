"""The level index of one kernel build and channel: which levels exist, which were yanked.

The publisher writes it, the agent reads it to find its level, the server's
catalog reads it for the fleet view.

A TUF client can look a target up by path but cannot list targets, so each
``<release>/<build_id>/<channel>/`` folder carries an ``index.json`` target
that the agent downloads (verified like any target) to learn the levels.
Format 1::

    {"format": 1, "release": "6.1.0-56-amd64", "build_id": "<hex>", "channel": "stable",
     "levels": [{"level": 1, "path": "<release>/<build_id>/stable/fix-L1.bundle"}],
     "yanked": [2]}

``yanked`` keeps the levels that were withdrawn: their numbers are never used
again, and an agent can tell a withdrawn level from one it never saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from suture import jsontypes
from suture.contract.checkin import MAX_LEVEL
from suture.jsontypes import as_int, as_str

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Level:
    """One published level and the target path of its bundle."""

    level: int
    path: str


@dataclass(frozen=True)
class BuildIndex:
    """The levels of one kernel build and channel, ascending."""

    release: str
    build_id: str
    channel: str
    levels: tuple[Level, ...] = ()
    yanked: tuple[int, ...] = ()

    @property
    def highest_ever(self) -> int:
        """The highest level ever published here, yanked or not (0: none)."""
        return max([lv.level for lv in self.levels] + list(self.yanked), default=0)

    def latest(self, at_most: int | None = None) -> Level | None:
        """The newest level that is not yanked (and not above ``at_most``), or None."""
        allowed = [lv for lv in self.levels if at_most is None or lv.level <= at_most]
        return allowed[-1] if allowed else None

    def find(self, level: int) -> Level | None:
        """The live entry for ``level``, or None."""
        return next((lv for lv in self.levels if lv.level == level), None)

    def with_level(self, level: int, path: str) -> BuildIndex:
        """A copy with ``level`` added; it must be above every level ever published."""
        if level <= self.highest_ever:
            raise ValueError(f"level {level} is not above {self.highest_ever}")
        return replace(self, levels=(*self.levels, Level(level, path)))

    def without_level(self, level: int) -> BuildIndex:
        """A copy with ``level`` moved to the yanked levels."""
        return replace(
            self,
            levels=tuple(lv for lv in self.levels if lv.level != level),
            yanked=tuple(sorted({*self.yanked, level})),
        )

    def to_json(self) -> bytes:
        """Canonical bytes (sorted keys): the same index hashes the same."""
        data = {
            "format": FORMAT_VERSION,
            "release": self.release,
            "build_id": self.build_id,
            "channel": self.channel,
            "levels": [{"level": lv.level, "path": lv.path} for lv in self.levels],
            "yanked": list(self.yanked),
        }
        return json.dumps(data, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> BuildIndex:
        """Parse index bytes.

        Raises:
            ValueError: not JSON, another format, or a field is missing or of the wrong type.
        """
        data = jsontypes.loads(raw)
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            raise ValueError(f"not a level index of format {FORMAT_VERSION}")
        try:
            index = cls(
                release=as_str(data["release"]),
                build_id=as_str(data["build_id"]),
                channel=as_str(data["channel"]),
                levels=tuple(
                    Level(as_int(e["level"], 1, MAX_LEVEL), as_str(e["path"]))
                    for e in data["levels"]
                ),
                yanked=tuple(as_int(v, 1, MAX_LEVEL) for v in data["yanked"]),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed level index: {e!r}") from e
        numbers = [lv.level for lv in index.levels]
        if numbers != sorted(set(numbers)):
            raise ValueError("the levels of the index are not strictly ascending")
        return index
