"""``init``: a new repository with fresh keys and the first version of every role."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp

from suture.errors import RepoError, RepoExistsError, UsageError
from suture.repo.keys import Keyring
from suture.repo.layout import ONLINE_ROLES, Layout
from suture.repo.metadata import (
    Expiry,
    RepoState,
    commit,
    expires_after,
    sign,
    write_config,
    write_root,
)


@dataclass(frozen=True)
class InitResult:
    """What ``init`` made and where the operator must take it."""

    root: Path
    trusted_root: Path  # metadata/root.json: install it on every agent
    root_keys: tuple[Path, ...]  # move these offline
    online_keys: tuple[Path, ...]
    root_threshold: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "repo": str(self.root),
            "trusted_root": str(self.trusted_root),
            "root_keys": [str(p) for p in self.root_keys],
            "online_keys": [str(p) for p in self.online_keys],
            "root_threshold": self.root_threshold,
            "serve": [str(self.root / "metadata"), str(self.root / "targets")],
        }


def init(directory: Path, *, root_threshold: int = 1, expiry: Expiry | None = None) -> InitResult:
    """Create a repository in ``directory`` (missing or empty).

    Makes ed25519 keys for root (``root_threshold`` of them, all needed to sign
    a new root) and one each for targets, snapshot and timestamp, then writes
    ``1.root.json`` (also as ``root.json``), the first targets, snapshot and
    timestamp. Everything is made in a sibling folder and renamed into place,
    so a failure leaves nothing half made.

    Raises:
        RepoExistsError: ``directory`` holds anything already.
        RepoError: the folder cannot be written (a read-only or pseudo file system).
        UsageError: ``root_threshold`` is below 1.
    """
    if root_threshold < 1:
        raise UsageError("the root threshold must be at least 1", hint="--root-threshold 1")
    directory = directory.absolute()
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise RepoExistsError(
            f"{directory} exists and is not empty: a repository is never overwritten",
            hint="choose a new folder; to change keys, use 'suture repo rotate-key'",
        )
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.init-", dir=directory.parent))
    except OSError as e:
        raise RepoError(
            f"cannot create a repository in {directory}: {e.strerror or e}",
            hint="choose a folder on a writable file system (not /proc or /sys)",
        ) from e
    try:
        _create(Layout(staging), root_threshold, expiry or Expiry())
        staging.chmod(0o755)  # mkdtemp's 0700 would hide metadata/ from the web server
        try:
            # rename(2) replaces an empty folder and fails on a non-empty one.
            staging.replace(directory)
        except OSError as e:
            raise RepoExistsError(
                f"{directory} was filled while the repository was made: {e}",
                hint="choose a new folder",
            ) from e
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise RepoError(
            f"cannot create a repository in {directory}: {e.strerror or e}",
            hint="check the folder's file system: writable, and not full",
        ) from e
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _result(Layout(directory), root_threshold)


def _create(layout: Layout, root_threshold: int, expiry: Expiry) -> None:
    keyring = Keyring(layout)
    root = Metadata(Root(expires=expires_after(expiry.root)))  # consistent snapshots on
    for _ in range(root_threshold):
        root.signed.add_key(keyring.generate("root"), "root")
    root.signed.roles["root"].threshold = root_threshold
    for role in ONLINE_ROLES:
        root.signed.add_key(keyring.generate(role), role)
    layout.metadata.mkdir(mode=0o755)
    layout.targets.mkdir(mode=0o755)
    write_root(layout, sign(root, "root", root.signed, keyring), root.signed.version)
    state = RepoState(
        root=root,
        targets=Metadata(Targets()),
        snapshot=Metadata(Snapshot()),
        timestamp=Metadata(Timestamp()),
    )
    commit(layout, state, keyring, expiry, bump=False)
    write_config(layout, expiry)


def _result(layout: Layout, root_threshold: int) -> InitResult:
    return InitResult(
        root=layout.root,
        trusted_root=layout.role_file("root"),
        root_keys=tuple(sorted(layout.offline_keys.glob("*.pem"))),
        online_keys=tuple(sorted(layout.keys.glob("*.pem"))),
        root_threshold=root_threshold,
    )
