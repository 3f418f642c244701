"""What a repository holds, read by its publisher: level indexes and target files, verified.

The publisher's side of a repository is a folder: its current targets
metadata says which files are signed in, with their hashes; each file is
read from ``targets/`` under its hash-prefixed name and checked against that.
``suture release`` reads here which levels a build has and which fixes they
were built from.
"""

from __future__ import annotations

from pathlib import Path

from tuf.api.exceptions import LengthOrHashMismatchError

from suture.errors import NotARepoError
from suture.repo import layout as paths
from suture.repo.index import BuildIndex
from suture.repo.layout import Layout
from suture.repo.metadata import load, read_config


class Contents:
    """The signed-in files of the repository at ``directory`` (metadata read once)."""

    def __init__(self, directory: Path) -> None:
        """Read the repository's current metadata.

        Raises:
            NotARepoError: not a repository, or its metadata cannot be read.
        """
        self.layout = Layout(directory)
        read_config(self.layout)
        self.targets = load(self.layout).targets.signed

    def has(self, path: str) -> bool:
        """A file is signed in at target path ``path``."""
        return path in self.targets.targets

    def read(self, path: str) -> bytes:
        """The bytes of the target at ``path``, checked against the signed hashes.

        Raises:
            NotARepoError: no such target, or its file is missing or altered.
        """
        target = self.targets.targets.get(path)
        if target is None:
            raise NotARepoError(f"the repository has no target {path}")
        stored = self.layout.targets / target.get_prefixed_paths()[0]
        try:
            data = stored.read_bytes()
            target.verify_length_and_hashes(data)
        except (OSError, LengthOrHashMismatchError) as e:
            raise NotARepoError(
                f"the target file {stored} is missing or altered: {e}",
                hint="restore the targets folder from a backup",
            ) from e
        return data

    def index(self, release: str, build_id: str, channel: str) -> BuildIndex:
        """The level index of one build and channel (empty when nothing was published).

        Raises:
            NotARepoError: the index file is missing, altered or malformed.
        """
        path = paths.index_path(release, build_id, channel)
        if not self.has(path):
            return BuildIndex(release, build_id, channel)
        try:
            return BuildIndex.from_json(self.read(path))
        except ValueError as e:
            raise NotARepoError(f"the level index {path} is malformed: {e}") from e
