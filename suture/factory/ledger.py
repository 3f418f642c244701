"""What a repository already offers one build and channel: its levels and their fixes.

A level made by ``suture release`` names, in its signed manifest, the fixes
it was built from; their files are signed in beside it. The next release for
that build starts from the newest live level's fixes, so that each level
holds every fix released before it (levels are cumulative).
"""

from __future__ import annotations

from dataclasses import dataclass

from suture import bundle
from suture.bundle import FixRecord
from suture.errors import BundleError, NotARepoError
from suture.factory.series import FixFile
from suture.repo import layout as paths
from suture.repo.contents import Contents


@dataclass(frozen=True)
class Released:
    """One build and channel in the repository."""

    highest_ever: int  # the highest level ever published (yanked ones too): 0 when none
    latest: int | None  # the newest live level
    fixes: tuple[FixRecord, ...]  # what the newest live level was built from

    def has(self, sha256: str) -> bool:
        """The newest live level holds this fix."""
        return any(f.sha256 == sha256 for f in self.fixes)


def released(contents: Contents, release: str, build_id: str, channel: str) -> Released:
    """What the repository offers the build now.

    A live level published without fixes (by ``suture publish``) counts as
    holding none: the next release builds on the fixes alone.

    Raises:
        NotARepoError: the repository's files are missing or altered.
    """
    index = contents.index(release, build_id, channel)
    latest = index.latest()
    if latest is None:
        return Released(index.highest_ever, None, ())
    manifest = _manifest(contents, latest.path)
    return Released(index.highest_ever, latest.level, manifest.fixes)


def fix_files(contents: Contents, records: tuple[FixRecord, ...]) -> list[FixFile]:
    """The files of released fixes, as signed into the repository.

    Raises:
        NotARepoError: a fix file is not in the repository.
    """
    return [
        FixFile(f"{r.sha256[:12]}.patch", contents.read(paths.fix_path(r.sha256))) for r in records
    ]


def _manifest(contents: Contents, path: str) -> bundle.Manifest:
    try:
        return bundle.manifest_of(contents.read(path), path)
    except BundleError as e:
        raise NotARepoError(f"the level {path} cannot be read: {e}") from e
