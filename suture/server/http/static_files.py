"""Which repository file a URL path names, and how long caches may keep it.

Only ``metadata/`` and ``targets/`` are reachable (never the key folders),
and a path is refused unless every component is a plain name: no ``..``, no
hidden files, no backslash or NUL, and the resolved file (symlinks followed)
still lies inside its folder. See docs/adr/0003-repository-layout.md for why
only ``timestamp.json`` and unversioned ``root.json`` may change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from suture.repo.layout import Layout

NO_CACHE = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"  # one year: never changes

_COMPONENT = re.compile(r"^[A-Za-z0-9_+~-][A-Za-z0-9._+~-]{0,254}$")
_VERSIONED = re.compile(r"^[1-9][0-9]*\.[A-Za-z0-9_-]+\.json$")  # N.role.json
_HASH_PREFIXED = re.compile(r"^[0-9a-f]{64,128}\.")  # TUF consistent-snapshot target name


class BadPath(Exception):  # noqa: N818  (an HTTP answer, not a Suture error)
    """The path tries to leave the repository or names something that cannot be a file."""


@dataclass(frozen=True)
class StaticFile:
    """A file to serve: where it is, its type and its ``Cache-Control``."""

    path: Path
    content_type: str
    cache_control: str


def resolve(layout: Layout, area: str, rel: str) -> StaticFile | None:
    """The file for ``/<area>/<rel>`` (``rel`` already percent-decoded), or None if missing.

    Raises:
        BadPath: ``rel`` is not a plain relative path inside ``area``.
    """
    base = {"metadata": layout.metadata, "targets": layout.targets}[area]
    parts = rel.split("/")
    if area == "metadata" and len(parts) != 1:
        raise BadPath("metadata has no folders")
    if not all(_COMPONENT.fullmatch(p) for p in parts):
        raise BadPath("not a plain relative path")
    path = base.joinpath(*parts)
    try:
        real = path.resolve(strict=True)
        if not real.is_relative_to(base.resolve(strict=True)):
            raise BadPath("the path leaves the repository")
        if not real.is_file():
            return None
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    name = parts[-1]
    if area == "metadata":
        immutable = bool(_VERSIONED.fullmatch(name))
    else:
        immutable = bool(_HASH_PREFIXED.match(name))
    content_type = "application/json" if name.endswith(".json") else "application/octet-stream"
    return StaticFile(real, content_type, IMMUTABLE if immutable else NO_CACHE)
