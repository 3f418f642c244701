"""Where things are: the repository's folders and the target paths agents look up.

The target paths are a contract with every agent: a bundle for one kernel
build and channel lives under ``<release>/<build_id>/<channel>/``, next to
that folder's ``index.json`` (see :mod:`suture.repo.index` and
docs/adr/0003-repository-layout.md). This module imports nothing from tuf,
so the agent can use it without pulling in the publisher's code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from suture.errors import UsageError

CHANNELS = ("stable", "testing")
ONLINE_ROLES = ("targets", "snapshot", "timestamp")  # their keys sign without a person
INDEX_NAME = "index.json"

# A path component that cannot climb (no "/", no leading "."), as Debian releases look.
# Matched whole (fullmatch): "$" would let a trailing newline through.
_RELEASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+~_-]{0,99}")
# GNU build ids are 20 bytes (sha1) by default; allow md5 to sha512 lengths, lowercase.
_BUILD_ID = re.compile(r"[0-9a-f]{16,128}")


def kernel_dir(release: str, build_id: str, channel: str) -> str:
    """The target folder of one kernel build and channel: ``<release>/<build_id>/<channel>``.

    Raises:
        UsageError: the release, build id or channel cannot name a folder.
    """
    if not _RELEASE.fullmatch(release):
        raise UsageError(
            f"kernel release {release!r} is not a release name",
            hint="give `uname -r` of the target kernel, e.g. 6.1.0-56-amd64",
        )
    if not _BUILD_ID.fullmatch(build_id):
        raise UsageError(
            f"build id {build_id!r} is not 16 to 128 lowercase hex digits",
            hint="give the kernel's GNU build id (suture status shows it)",
        )
    if channel not in CHANNELS:
        raise UsageError(
            f"channel {channel!r} is not one of {', '.join(CHANNELS)}",
            hint="use --channel stable or --channel testing",
        )
    return f"{release}/{build_id}/{channel}"


def bundle_name(name: str, level: int) -> str:
    """The file name of a bundle: ``<name>-L<level>.bundle``."""
    return f"{name}-L{level}.bundle"


def bundle_path(release: str, build_id: str, channel: str, name: str, level: int) -> str:
    """The target path of one level's bundle."""
    return f"{kernel_dir(release, build_id, channel)}/{bundle_name(name, level)}"


def fix_path(sha256: str) -> str:
    """The target path of a fix file a released level was built from: ``fixes/<sha256>.patch``.

    Raises:
        UsageError: ``sha256`` is not 64 lowercase hex digits.
    """
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise UsageError(f"{sha256!r} is not the sha256 of a fix")
    return f"fixes/{sha256}.patch"


def index_path(release: str, build_id: str, channel: str) -> str:
    """The target path of the level index of one kernel build and channel."""
    return f"{kernel_dir(release, build_id, channel)}/{INDEX_NAME}"


@dataclass(frozen=True)
class Layout:
    """The folders of a repository at ``root``.

    Only ``metadata/`` and ``targets/`` are for serving; the key folders must
    never be published.
    """

    root: Path

    @property
    def metadata(self) -> Path:
        """TUF metadata: ``N.root.json``, ``N.targets.json``, ``N.snapshot.json``, timestamp."""
        return self.root / "metadata"

    @property
    def targets(self) -> Path:
        """Target files, each under its hash-prefixed name."""
        return self.root / "targets"

    @property
    def keys(self) -> Path:
        """The online private keys (targets, snapshot, timestamp), mode 0600."""
        return self.root / "keys"

    @property
    def offline_keys(self) -> Path:
        """The root private keys, to be moved to offline storage after ``init``."""
        return self.root / "keys-offline"

    @property
    def config(self) -> Path:
        """``repo.json``: the format version and the expiry policy."""
        return self.root / "repo.json"

    @property
    def lock(self) -> Path:
        """Held while the repository changes, so two publishers do not interleave."""
        return self.root / ".lock"

    def role_file(self, role: str, version: int | None = None) -> Path:
        """``metadata/<version>.<role>.json``, or ``metadata/<role>.json`` without a version."""
        name = f"{role}.json" if version is None else f"{version}.{role}.json"
        return self.metadata / name
