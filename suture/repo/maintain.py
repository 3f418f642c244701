"""``refresh`` and ``rotate_key``: keep the metadata fresh and the online keys replaceable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata, Root

from suture import timefmt
from suture.errors import SigningKeyError, UsageError
from suture.fsutil import locked
from suture.repo.keys import Keyring
from suture.repo.layout import ONLINE_ROLES, Layout
from suture.repo.metadata import (
    CHAIN,
    RepoState,
    commit,
    expires_after,
    load,
    read_config,
    sign,
    write_root,
)

ROOT_WARNING = timedelta(days=30)  # warn this long before root expires


@dataclass(frozen=True)
class RefreshResult:
    """The versions and expiry dates after a refresh."""

    versions: dict[str, int]
    expires: dict[str, datetime]
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "versions": self.versions,
            "expires": {r: timefmt.utc(d) for r, d in self.expires.items()},
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class RotateResult:
    """The key that replaced a role's keys, and the root version that says so."""

    role: str
    keyid: str
    retired: tuple[str, ...]
    root_version: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "role": self.role,
            "keyid": self.keyid,
            "retired": list(self.retired),
            "root_version": self.root_version,
        }


def refresh(directory: Path, *, keys: Keyring | None = None) -> RefreshResult:
    """Re-sign snapshot and timestamp with new versions and expiry dates.

    Run it from cron more often than the timestamp's lifetime (one day by
    default). Targets is re-signed too when it would expire before the new
    snapshot does: agents must never see a fresh snapshot over stale targets.

    Raises:
        NotARepoError, SigningKeyError: the repository or its keys cannot be used.
    """
    layout = Layout(directory)
    expiry = read_config(layout)
    with locked(layout.lock):
        state = load(layout)
        stale = state.targets.signed.expires <= expires_after(expiry.snapshot)
        commit(
            layout, state, keys or Keyring(layout), expiry, start="targets" if stale else "snapshot"
        )
    warnings = []
    if state.root.signed.expires <= datetime.now(UTC) + ROOT_WARNING:
        warnings.append(
            f"root v{state.root.signed.version} expires at "
            f"{timefmt.utc(state.root.signed.expires)}: agents stop updating then; "
            "sign a new root with the offline key"
        )
    return RefreshResult(
        versions={r: state.role(r).signed.version for r in ("root", *CHAIN)},
        expires={r: state.role(r).signed.expires for r in ("root", *CHAIN)},
        warnings=tuple(warnings),
    )


def rotate_key(directory: Path, role: str, *, keys: Keyring | None = None) -> RotateResult:
    """Replace ``role``'s keys with a new one: root N+1 trusts it, the role is re-signed.

    The role (and the roles above it) are re-signed by the old and the new
    key and written before ``N+1.root.json``: an agent that still holds root
    N and one that already walked to N+1 both verify them. The old key files
    are deleted at the end: the new root no longer trusts them.

    Raises:
        UsageError: ``role`` is not an online role.
        SigningKeyError: fewer root keys at hand than root's threshold.
        NotARepoError: the repository cannot be read.
    """
    if role not in ONLINE_ROLES:
        raise UsageError(
            f"cannot rotate {role!r}: the roles with online keys are {', '.join(ONLINE_ROLES)}",
            hint="rotating root's own keys is not supported yet",
        )
    layout = Layout(directory)
    expiry = read_config(layout)
    keyring = keys or Keyring(layout)
    with locked(layout.lock):
        state = load(layout)
        _require_root_keys(state, keyring)
        previous = Metadata[Root].from_bytes(state.root.to_bytes())
        old_keyids = tuple(state.root.signed.roles[role].keyids)
        old_signers = keyring.signers(role, [state.root.signed.get_key(k) for k in old_keyids])
        new_key = keyring.generate(role)
        try:
            root = state.root.signed
            for keyid in old_keyids:
                root.revoke_key(keyid, role)
            root.add_key(new_key, role)
            root.version += 1
            root.expires = expires_after(expiry.root)
            root_bytes = sign(state.root, "root", root, keyring)
            _check_root_chain(previous.signed, state.root)
            commit(layout, state, keyring, expiry, start=role, extra={role: old_signers})
        except BaseException:
            keyring.retire(role, new_key.keyid)
            raise
        write_root(layout, root_bytes, root.version)
    for keyid in old_keyids:
        keyring.retire(role, keyid)
    return RotateResult(
        role=role, keyid=new_key.keyid, retired=old_keyids, root_version=root.version
    )


def _require_root_keys(state: RepoState, keyring: Keyring) -> None:
    # Checked before a key is made: without root's signatures nothing may change.
    root = state.root.signed
    trusted = root.roles["root"]
    found = keyring.signers("root", [root.get_key(k) for k in trusted.keyids])
    if len(found) < trusted.threshold:
        raise SigningKeyError(
            f"a new root needs {trusted.threshold} root key(s); "
            f"{len(found)} found in {keyring.folder('root')}",
            hint="bring the offline root keys back (or pass --offline-keys DIR), "
            "rotate, and take them offline again",
        )


def _check_root_chain(previous: Root, new: Metadata[Root]) -> None:
    # Agents accept root N+1 only when both N's and N+1's root keys signed it.
    result = new.signed.get_root_verification_result(previous, new.signed_bytes, new.signatures)
    if not result.verified:
        raise SigningKeyError(
            f"root v{new.signed.version} is not signed by enough keys of v{previous.version} "
            f"and v{new.signed.version}",
            hint="bring every offline root key back for the rotation",
        )
