"""The repository's TUF metadata: load the current set, re-sign, write in a safe order.

Every change ends in :func:`commit`, which bumps a role and every role above
it (targets, then snapshot, then timestamp), signs each with its keys,
checks the signatures against root before anything is written, and writes
the version-named files first and ``timestamp.json`` last. Until that last
rename, agents see the previous consistent state; after it, the new one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from securesystemslib.signer import Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, Targets, Timestamp
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from suture.errors import NotARepoError, SigningKeyError
from suture.fsutil import atomic_write
from suture.repo.keys import SignerSource
from suture.repo.layout import Layout

FORMAT_VERSION = 1
HASH_ALGORITHMS = ["sha256"]
# Indented: metadata is small, and operators read it.
SERIALIZER = JSONSerializer(compact=False)
CHAIN = ("targets", "snapshot", "timestamp")


@dataclass(frozen=True)
class Expiry:
    """How long each role's metadata stays valid after it is signed.

    Root and targets change rarely; snapshot and timestamp are re-signed by
    ``suture repo refresh``, which must run more often than ``timestamp``.
    """

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=90)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(days=1)

    def of(self, role: str) -> timedelta:
        """The lifetime of ``role``."""
        lifetime: timedelta = getattr(self, role)
        return lifetime

    def to_dict(self) -> dict[str, int]:
        """Seconds per role, for ``repo.json``."""
        return {role: int(self.of(role).total_seconds()) for role in ("root", *CHAIN)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Expiry:
        """Read the seconds per role back; missing roles keep their default."""
        return cls(**{role: timedelta(seconds=int(s)) for role, s in data.items()})


def expires_after(lifetime: timedelta) -> datetime:
    """Now plus ``lifetime``, in whole seconds (TUF's date format has no fractions)."""
    return datetime.now(UTC).replace(microsecond=0) + lifetime


def write_config(layout: Layout, expiry: Expiry) -> None:
    """Write ``repo.json``: what marks the folder as a Suture repository."""
    data = {"format": FORMAT_VERSION, "expiry_seconds": expiry.to_dict()}
    atomic_write(layout.config, json.dumps(data, indent=2, sort_keys=True).encode() + b"\n")


def read_config(layout: Layout) -> Expiry:
    """The repository's expiry policy.

    Raises:
        NotARepoError: no readable ``repo.json`` of a known format.
    """
    try:
        data = json.loads(layout.config.read_bytes())
        version = data.get("format")
        expiry = Expiry.from_dict(data["expiry_seconds"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise NotARepoError(
            f"{layout.root} is not a Suture repository ({layout.config.name}: {e})",
            hint="create one with 'suture repo init DIR', or pass the right --repo",
        ) from e
    if version != FORMAT_VERSION:
        raise NotARepoError(
            f"{layout.config} is of format {version!r}; this Suture reads {FORMAT_VERSION}",
            hint="use the Suture version that made the repository",
        )
    return expiry


@dataclass
class RepoState:
    """The current metadata: the newest root, and what ``timestamp.json`` leads to."""

    root: Metadata[Root]
    targets: Metadata[Targets]
    snapshot: Metadata[Snapshot]
    timestamp: Metadata[Timestamp]

    def role(self, name: str) -> Metadata[Any]:
        """The metadata of a top-level role by name."""
        md: Metadata[Any] = getattr(self, name)
        return md


def load(layout: Layout) -> RepoState:
    """Read the current metadata as an agent would find it, from timestamp down.

    Raises:
        NotARepoError: a file is missing or is not TUF metadata.
    """
    try:
        root_version = max(
            (int(p.name.split(".", 1)[0]) for p in layout.metadata.glob("*.root.json")),
            default=0,
        )
        root = Metadata[Root].from_file(str(layout.role_file("root", root_version)))
        timestamp = Metadata[Timestamp].from_file(str(layout.role_file("timestamp")))
        snapshot_version = timestamp.signed.snapshot_meta.version
        snapshot = Metadata[Snapshot].from_file(str(layout.role_file("snapshot", snapshot_version)))
        targets_version = snapshot.signed.meta["targets.json"].version
        targets = Metadata[Targets].from_file(str(layout.role_file("targets", targets_version)))
    except (OSError, ValueError, KeyError, DeserializationError) as e:
        raise NotARepoError(
            f"the metadata in {layout.metadata} cannot be read: {e}",
            hint="restore the folder from a backup; every version-named file must stay",
        ) from e
    return RepoState(root=root, targets=targets, snapshot=snapshot, timestamp=timestamp)


def sign(
    md: Metadata[Any],
    role: str,
    root: Root,
    keys: SignerSource,
    extra: Sequence[Signer] = (),
) -> bytes:
    """Replace ``md``'s signatures with those of ``role``'s keys; return the bytes to write.

    ``extra`` signers sign too (during a key rotation, the outgoing key), and
    count only where a root trusts them.

    Raises:
        SigningKeyError: fewer keys than the threshold, or the signatures do not verify.
    """
    trusted = root.roles[role]
    signers = [*keys.signers(role, [root.get_key(k) for k in trusted.keyids]), *extra]
    md.signatures.clear()
    try:
        for signer in signers:
            md.sign(signer, append=True)
        # Check before writing: a wrong key URI must not publish unverifiable metadata.
        root.verify_delegate(role, md.signed_bytes, md.signatures)
    except UnsignedMetadataError as e:
        raise SigningKeyError(
            f"{role} metadata needs {trusted.threshold} of its keys, "
            f"{len(signers)} found or usable: {e}",
            hint=f"put {role}'s private keys where the repository keeps them"
            + (" (--offline-keys)" if role == "root" else ""),
        ) from e
    return md.to_bytes(SERIALIZER)


def commit(
    layout: Layout,
    state: RepoState,
    keys: SignerSource,
    expiry: Expiry,
    *,
    start: str = "targets",
    extra: Mapping[str, Sequence[Signer]] | None = None,
    bump: bool = True,
) -> None:
    """Bump, sign and write ``start`` and every role above it, timestamp last.

    Args:
        layout: the repository.
        state: the metadata to change; versions and expiry are set here.
        keys: the signers.
        expiry: the lifetimes to sign with.
        start: ``targets``, ``snapshot`` or ``timestamp``.
        extra: more signers per role (see :func:`sign`).
        bump: raise the versions (False only for the first versions, at ``init``).
    """
    extra = extra or {}
    roles = CHAIN[CHAIN.index(start) :]
    written: dict[str, bytes] = {}
    for role in roles:
        md = state.role(role)
        md.signed.version += 1 if bump else 0
        md.signed.expires = expires_after(expiry.of(role))
        # Pinned with length and hashes, not just the version: a file of the
        # right version but other bytes (mix-and-match, tampering) is refused.
        if role == "snapshot" and "targets" in written:
            state.snapshot.signed.meta["targets.json"] = _pin(state.targets, written["targets"])
        if role == "timestamp" and "snapshot" in written:
            state.timestamp.signed.snapshot_meta = _pin(state.snapshot, written["snapshot"])
        written[role] = sign(md, role, state.root.signed, keys, extra.get(role, ()))
    for role in roles:
        version = None if role == "timestamp" else state.role(role).signed.version
        atomic_write(layout.role_file(role, version), written[role])


def _pin(md: Metadata[Any], data: bytes) -> MetaFile:
    return MetaFile.from_data(md.signed.version, data, HASH_ALGORITHMS)


def write_root(layout: Layout, data: bytes, version: int) -> None:
    """Write ``N.root.json`` and the plain ``root.json`` agents install as their trust anchor."""
    atomic_write(layout.role_file("root", version), data)
    atomic_write(layout.role_file("root"), data)
