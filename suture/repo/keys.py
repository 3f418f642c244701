"""The private halves of the repository's keys, behind one small interface.

Today keys are ed25519 PEM files: root's in ``keys-offline/`` (to be moved
to offline storage), the online roles' in ``keys/``, each named
``<role>-<keyid>.pem`` with mode 0600. A key held by an HSM or a KMS is
plugged in as a securesystemslib private-key URI (``hsm:``, ``awskms:``,
``gcpkms:``, ``hv:``...) for its keyid; everything that signs asks a
:class:`SignerSource` and never opens key files itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, Key, Signer, SSlibKey

from suture.errors import SigningKeyError
from suture.fsutil import atomic_write
from suture.repo.layout import ONLINE_ROLES, Layout


class SignerSource(Protocol):
    """Where the private keys of a role are."""

    def signers(self, role: str, keys: Sequence[Key]) -> list[Signer]:
        """A signer for each of ``keys`` whose private half is at hand (maybe none)."""
        ...


class Keyring:
    """Private keys as files under the repository, or at private-key URIs.

    Args:
        layout: the repository's folders.
        offline_keys: where the root keys are, when not in ``layout.offline_keys``
            (e.g. a mounted USB stick).
        uris: keyid to a securesystemslib private-key URI; these take precedence
            over files, for keys that never touch a disk.
    """

    def __init__(
        self,
        layout: Layout,
        *,
        offline_keys: Path | None = None,
        uris: Mapping[str, str] | None = None,
    ) -> None:
        self._layout = layout
        self._offline = offline_keys or layout.offline_keys
        self._uris = dict(uris or {})

    def folder(self, role: str) -> Path:
        """The folder of ``role``'s key files."""
        return self._layout.keys if role in ONLINE_ROLES else self._offline

    def path(self, role: str, keyid: str) -> Path:
        """The PEM file of one of ``role``'s keys."""
        return self.folder(role) / f"{role}-{keyid}.pem"

    def signers(self, role: str, keys: Sequence[Key]) -> list[Signer]:
        """A signer for each of ``keys`` that has a URI or a key file.

        Raises:
            SigningKeyError: a key file or URI exists but cannot be used.
        """
        found = []
        for key in keys:
            uri = self._uris.get(key.keyid)
            path = self.path(role, key.keyid)
            try:
                if uri is not None:
                    found.append(Signer.from_priv_key_uri(uri, key))
                elif path.exists():
                    found.append(_file_signer(path, key))
            except (OSError, ValueError, TypeError) as e:
                where = uri or str(path)
                raise SigningKeyError(
                    f"the {role} key {key.keyid[:16]}… at {where} cannot be used: {e}",
                    hint="check that the key file or URI belongs to this repository",
                ) from e
        return found

    def generate(self, role: str) -> Key:
        """Make a new ed25519 key for ``role``, write its private half (0600), return the public."""
        signer = CryptoSigner.generate_ed25519()
        folder = self.folder(role)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self.path(role, signer.public_key.keyid), signer.private_bytes, mode=0o600)
        return signer.public_key

    def retire(self, role: str, keyid: str) -> None:
        """Delete the key file of a key the root no longer trusts."""
        self.path(role, keyid).unlink(missing_ok=True)


def _file_signer(path: Path, key: Key) -> Signer:
    # Loaded here rather than through a "file2:" URI: a URI is parsed as one, so a
    # repository path holding "#" or "?" would be cut short.
    if not isinstance(key, SSlibKey):
        raise TypeError(f"{key.keytype} keys cannot be read from files")
    private = load_pem_private_key(path.read_bytes(), password=None)
    return CryptoSigner(private, key)
