"""The agent's trust in a patch repository: python-tuf's ngclient behind Suture's errors.

Everything that can fail in TUF's client workflow fails here as a Suture
error an operator can act on: :class:`~suture.errors.FetchError` when the
repository cannot be reached (retry later), a
:class:`~suture.errors.VerificationError` when what it served must not be
trusted (do not apply, alert). Network I/O goes through python-tuf's
``FetcherInterface``: its urllib3 fetcher for ``http(s)://``, or
:class:`FileFetcher` for ``file://`` (an air-gapped mirror, the tests).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from tuf.api import exceptions as tuf_errors
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig, Urllib3Fetcher

from suture import __version__
from suture.errors import (
    FetchError,
    IntegrityError,
    MetadataExpiredError,
    RollbackError,
    SignatureError,
    UpdateError,
    VerificationError,
)

CHUNK = 64 << 10  # bytes per read from a file:// mirror


@dataclass(frozen=True)
class Remote:
    """A repository and the root of trust this host holds for it.

    Attributes:
        url: the base URL that serves ``metadata/`` and ``targets/``
            (``https://``, ``http://`` or ``file://``).
        trusted_root: a ``root.json`` of that repository, installed out of band;
            newer roots are reached from it, each signed by the one before.
    """

    url: str
    trusted_root: bytes

    @property
    def metadata_url(self) -> str:
        """Where ``N.root.json``, ``timestamp.json``... are."""
        return f"{self.url.rstrip('/')}/metadata/"

    @property
    def targets_url(self) -> str:
        """Where the hash-prefixed target files are."""
        return f"{self.url.rstrip('/')}/targets/"


class FileFetcher(FetcherInterface):
    """Serves ``file://`` URLs from the local file system; a missing file is an HTTP 404.

    The 404 matters: python-tuf looks for ``N+1.root.json`` until the
    repository answers "not found".
    """

    def _fetch(self, url: str) -> Iterator[bytes]:
        parsed = urlparse(url)
        if parsed.scheme != "file":
            raise tuf_errors.DownloadError(f"{url}: only file:// URLs are read from disk")
        path = Path(unquote(parsed.path))
        try:
            f = path.open("rb")
        except FileNotFoundError as e:
            raise tuf_errors.DownloadHTTPError(f"{path} does not exist", 404) from e
        return _chunks(f)


def _chunks(f: BinaryIO) -> Iterator[bytes]:
    with f:
        while chunk := f.read(CHUNK):
            yield chunk


def default_fetcher(url: str, timeout: int = 30) -> FetcherInterface:
    """:class:`FileFetcher` for ``file://`` URLs, python-tuf's urllib3 fetcher otherwise.

    Args:
        url: the repository's base URL.
        timeout: s to connect, and between two received bytes; a slower server
            fails the download (and the cycle retries).
    """
    if url.startswith("file://"):
        return FileFetcher()
    return Urllib3Fetcher(socket_timeout=timeout, app_user_agent=f"suture/{__version__}")


def open_updater(
    remote: Remote, state_dir: Path, fetcher: FetcherInterface | None = None
) -> Updater:
    """A python-tuf ``Updater`` whose trusted metadata lives in ``state_dir/metadata``.

    Raises:
        VerificationError: the trusted root is not valid root metadata.
        UpdateError: the state folder cannot be written.
    """
    metadata_dir = state_dir / "metadata"
    with translated("loading the trusted root"):
        metadata_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return Updater(
            str(metadata_dir),
            remote.metadata_url,
            str(state_dir / "targets"),
            remote.targets_url,
            fetcher or default_fetcher(remote.url),
            UpdaterConfig(app_user_agent=f"suture/{__version__}"),
            bootstrap=remote.trusted_root,
        )


@contextlib.contextmanager
def translated(doing: str, target: str | None = None) -> Iterator[None]:
    """Raise python-tuf's and the file system's errors as Suture errors.

    Args:
        doing: what was under way, for the message ("checking the repository's metadata").
        target: the target path when a target file was being fetched, so a
            length or hash mismatch is blamed on that file, not on metadata.
    """
    try:
        yield
    except tuf_errors.RepositoryError as e:
        raise _verification_error(e, doing, target) from e
    except tuf_errors.DownloadLengthMismatchError as e:
        what = target or "a metadata file"
        raise IntegrityError(
            f"{doing}: the repository sent more bytes for {what} than its signed length ({e})",
            hint="a mirror or proxy may be feeding endless data; nothing was kept",
        ) from e
    except tuf_errors.DownloadError as e:
        raise FetchError(
            f"{doing}: the repository did not serve a file: {e}",
            hint="check the repository URL and the network; the agent retries later",
        ) from e
    except OSError as e:
        raise UpdateError(
            f"{doing}: {e}", hint="check that the agent's state folder is writable"
        ) from e


def _verification_error(
    e: tuf_errors.RepositoryError, doing: str, target: str | None
) -> VerificationError:
    alert = "do not apply patches from it; tell the repository's operators"
    if isinstance(e, tuf_errors.BadVersionNumberError):
        return RollbackError(
            f"rollback detected while {doing}: {e}",
            hint="the repository or a mirror serves older metadata than this host has seen; "
            + alert,
        )
    if isinstance(e, tuf_errors.ExpiredMetadataError):
        return MetadataExpiredError(
            f"metadata expired: the repository may be frozen ({e})",
            hint="the publisher must run 'suture repo refresh' (a cron job); "
            "also check this host's clock",
        )
    if isinstance(e, tuf_errors.UnsignedMetadataError):
        return SignatureError(
            f"{doing}: metadata is not signed by the keys this host trusts ({e})",
            hint="the repository may be compromised, or this host's trusted root is for "
            "another repository; " + alert,
        )
    if isinstance(e, tuf_errors.LengthOrHashMismatchError):
        if target is not None:
            return IntegrityError(
                f"{target}: the downloaded bytes do not match their signed length and hashes "
                f"(tampered or damaged): {e}",
                hint="nothing was kept; if it happens again, " + alert,
            )
        return IntegrityError(
            f"{doing}: a metadata file does not match the length and hashes its signer "
            f"pinned (mix-and-match or tampering): {e}",
            hint=alert,
        )
    return VerificationError(f"{doing}: the repository's metadata is not valid: {e}", hint=alert)
