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
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO
from urllib.parse import unquote, urlparse

from tuf.api import exceptions as tuf_errors
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from suture import __version__
from suture.agent import http
from suture.errors import (
    FetchError,
    IntegrityError,
    MetadataExpiredError,
    RollbackError,
    SignatureError,
    UpdateError,
    VerificationError,
)

CHUNK = 64 << 10  # bytes per read (a file:// mirror, or at most one socket read)
MAX_BARE_FETCH = 1 << 20  # bytes of a fetch() that names no length (python-tuf never does)


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


class HttpFetcher(FetcherInterface):
    """``http(s)://`` through urllib3, every download bounded in time, failures that say why.

    python-tuf's own urllib3 fetcher bounds each read by its timeout, not the
    download: a mirror that drips a byte just inside it holds the cycle (and
    the state lock) for hours. Here a file of at most ``max_length`` bytes
    must arrive within :func:`suture.agent.http.deadline` (twice the timeout,
    plus the length at 16 KiB/s), checked between reads of at most one
    socket read each, and enforced by a timer for the request as a whole.
    A failure names the URL and the cause (refused, DNS, TLS, timeout, HTTP
    status), which python-tuf's errors lose.
    """

    def __init__(
        self,
        timeout: float = 30,
        proxy: str = "",
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        import urllib3  # noqa: PLC0415 - loaded only when the TUF client is

        self._urllib3 = urllib3
        headers = {"User-Agent": f"suture/{__version__}"}
        self._pool = (
            urllib3.ProxyManager(proxy, headers=headers)
            if proxy
            else urllib3.PoolManager(headers=headers)
        )
        self.timeout = timeout
        self.progress = progress
        # Redirects are followed (mirrors, CDNs); a failed connection is tried once
        # more; everything else fails at once, and the agent's cycle retries.
        self._retries = urllib3.Retry(total=7, connect=1, read=0, redirect=5, status=0, other=0)

    def _fetch(self, url: str) -> Iterator[bytes]:
        # download_file() is the way in; this serves a bare fetch() with a default bound.
        return iter([self._download(url, MAX_BARE_FETCH)])

    @contextlib.contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        """Download ``url`` (at most ``max_length`` bytes) into a temporary file, in time."""
        with tempfile.TemporaryFile() as f:
            f.write(self._download(url, max_length))
            f.seek(0)
            yield f

    def download_bytes(self, url: str, max_length: int) -> bytes:
        """Download ``url`` (at most ``max_length`` bytes), in time."""
        return self._download(url, max_length)

    def _download(self, url: str, max_length: int) -> bytes:
        seconds = http.deadline(self.timeout, max_length)
        try:
            with http.bounded(seconds + 1, url):
                return self._read(url, max_length, time.monotonic() + seconds)
        except http.DeadlineError as e:
            raise tuf_errors.SlowRetrievalError(f"{url}: {e}") from e

    def _read(self, url: str, max_length: int, end: float) -> bytes:
        u3 = self._urllib3
        try:
            response = self._pool.request(
                "GET",
                url,
                preload_content=False,
                timeout=u3.Timeout(connect=self.timeout, read=self.timeout),
                retries=self._retries,
            )
        except (u3.exceptions.HTTPError, OSError) as e:
            raise tuf_errors.DownloadError(f"{url}: {http.describe(e)}") from e
        complete = False
        try:
            if response.status >= 400:
                raise tuf_errors.DownloadHTTPError(
                    f"{url}: HTTP {response.status}", response.status
                )
            data = self._body(url, response, max_length, end)
            complete = True
        except (u3.exceptions.HTTPError, OSError) as e:
            raise tuf_errors.DownloadError(f"{url}: {http.describe(e)}") from e
        else:
            return data
        finally:
            # A connection with an answer left unread (an error, a deadline)
            # must not serve the next request: that would read the rest.
            if complete:
                response.release_conn()
            else:
                response.close()

    def _body(self, url: str, response: Any, max_length: int, end: float) -> bytes:
        chunks: list[bytes] = []
        size, shown = 0, time.monotonic()
        total = int(response.headers.get("Content-Length") or 0)
        while chunk := response.read1(CHUNK):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_length:
                raise tuf_errors.DownloadLengthMismatchError(
                    f"{url}: more than the {max_length} bytes allowed"
                )
            now = time.monotonic()
            if now > end:
                allowed = http.deadline(self.timeout, max_length)
                raise tuf_errors.SlowRetrievalError(
                    f"{url}: only {size} bytes in {allowed:.0f} s, the whole-download deadline"
                )
            if self.progress is not None and now - shown >= 1.0:
                self.progress(url, size, total)
                shown = now
        return b"".join(chunks)


def default_fetcher(
    url: str,
    timeout: float = 30,
    proxy: str = "",
    progress: Callable[[str, int, int], None] | None = None,
) -> FetcherInterface:
    """:class:`FileFetcher` for ``file://`` URLs, :class:`HttpFetcher` otherwise.

    Args:
        url: the repository's base URL.
        timeout: s to connect, and between two received bytes; a whole
            download is bounded too (:func:`suture.agent.http.deadline`).
        proxy: an http(s) proxy URL ("": direct).
        progress: called with (url, bytes so far, total or 0) about once a second.
    """
    if url.startswith("file://"):
        return FileFetcher()
    return HttpFetcher(timeout, proxy, progress)


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
    except tuf_errors.SlowRetrievalError as e:
        raise FetchError(
            f"{doing}: {e or 'the repository is too slow'}",
            hint="the repository or a proxy on the way is too slow; the agent retries later",
        ) from e
    except tuf_errors.DownloadError as e:
        raise FetchError(
            f"{doing}: {_why(e)}",
            hint="check the repository URL and the network; the agent retries later",
        ) from e
    except OSError as e:
        raise UpdateError(
            f"{doing}: {e}", hint="check that the agent's state folder is writable"
        ) from e


def _why(e: BaseException) -> str:
    """The error's own words (ours name the URL), and the cause when they do not say it."""
    text, cause = str(e), http.describe(e)
    return text if cause in text else f"{text}: {cause}" if text else cause


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
