"""The repository's target paths: where an agent finds the levels of its kernel build.

A bundle for one kernel build and channel lives under
``<release>/<build_id>/<channel>/``, next to that folder's ``index.json``
(:mod:`suture.contract.index`; docs/adr/0003-repository-layout.md). The
publisher writes these paths, the agent looks them up, and the server reads
them for its catalog.
"""

from __future__ import annotations

import re

from suture.errors import UsageError

CHANNELS = ("stable", "testing")
INDEX_NAME = "index.json"

# A path component that cannot climb (no "/", no leading "."), as Debian releases look.
RELEASE = "^[A-Za-z0-9][A-Za-z0-9.+~_-]{0,99}$"
# GNU build ids are 20 bytes (sha1) by default; allow md5 to sha512 lengths, lowercase.
BUILD_ID = "^[0-9a-f]{16,128}$"
FIX_SHA256 = "^[0-9a-f]{64}$"

_RELEASE = re.compile(RELEASE)
_BUILD_ID = re.compile(BUILD_ID)


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
    if not re.fullmatch(FIX_SHA256, sha256):
        raise UsageError(f"{sha256!r} is not the sha256 of a fix")
    return f"fixes/{sha256}.patch"


def index_path(release: str, build_id: str, channel: str) -> str:
    """The target path of the level index of one kernel build and channel."""
    return f"{kernel_dir(release, build_id, channel)}/{INDEX_NAME}"
