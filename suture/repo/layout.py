"""Where things are: the repository's folders, and the target paths agents look up.

The target paths are a contract with every agent, defined in
:mod:`suture.contract.targets` and re-exported here for the publisher's code.
This module imports nothing from tuf, so the agent can use it without pulling
in the publisher's code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from suture.contract.targets import (
    CHANNELS,
    INDEX_NAME,
    bundle_name,
    bundle_path,
    fix_path,
    index_path,
    kernel_dir,
)

__all__ = [
    "CHANNELS",
    "INDEX_NAME",
    "ONLINE_ROLES",
    "Layout",
    "bundle_name",
    "bundle_path",
    "fix_path",
    "index_path",
    "kernel_dir",
]

ONLINE_ROLES = ("targets", "snapshot", "timestamp")  # their keys sign without a person


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
