"""Find the newest level for this host's exact kernel build, and fetch it verified.

One :func:`session` is one update cycle: it holds the state folder's lock,
refreshes the repository's metadata once (python-tuf's ``Updater`` refreshes
once in its life), and hands out :class:`Offer` objects that only it can
download. Usage::

    with update.session(remote, state_dir) as s:
        offer = s.find_latest(release, build_id, "stable")
        if offer is not None and offer.level > applied_level:
            path = s.download(offer, bundles_dir)

Levels are listed through the build's level index (a target, see
:mod:`suture.repo.index`), because a TUF client can look targets up but not
list them. Whatever the signed metadata says, a bundle whose own manifest
names another kernel build is refused.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuf.api.metadata import TargetFile
from tuf.ngclient import FetcherInterface, Updater

from suture import bundle
from suture.agent import trust
from suture.bundle import labtest
from suture.errors import (
    BundleError,
    SutureError,
    UpdateError,
    VerificationError,
    WrongBuildError,
)
from suture.fsutil import locked
from suture.repo import layout
from suture.repo.index import BuildIndex

CHECKING = "checking the repository's metadata"


@dataclass(frozen=True)
class Offer:
    """A level signed for one kernel build and channel, as its target metadata describes it."""

    release: str
    build_id: str
    channel: str
    level: int
    name: str
    cves: tuple[str, ...]
    path: str  # the target path in the repository
    length: int  # bytes, signed
    sha256: str  # signed
    yanked: tuple[int, ...]  # levels withdrawn for this build and channel
    tested: str  # the signed word on its lab test: passed, failed or untested
    _target: TargetFile = field(repr=False, compare=False)
    _session: object = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "release": self.release,
            "build_id": self.build_id,
            "channel": self.channel,
            "level": self.level,
            "name": self.name,
            "cves": list(self.cves),
            "path": self.path,
            "length": self.length,
            "sha256": self.sha256,
            "yanked": list(self.yanked),
            "tested": self.tested,
        }


@contextlib.contextmanager
def session(
    remote: trust.Remote, state_dir: Path, *, fetcher: FetcherInterface | None = None
) -> Iterator[UpdateSession]:
    """One update cycle against ``remote``, with trusted metadata kept in ``state_dir``.

    Raises:
        VerificationError: the trusted root is not valid.
        UpdateError: ``state_dir`` cannot be written.
    """
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise UpdateError(f"cannot create the state folder {state_dir}: {e.strerror}") from e
    # python-tuf does not support two Updaters on one metadata folder at once.
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(locked(state_dir / "update.lock"))
        except OSError as e:
            raise UpdateError(
                f"cannot lock the trusted metadata in {state_dir}: {e.strerror or e}",
                hint="check that the agent's state folder is writable and its disk not full",
            ) from e
        current = UpdateSession(trust.open_updater(remote, state_dir, fetcher))
        try:
            yield current
        finally:
            current.closed = True


class UpdateSession:
    """The steps of one update cycle; made by :func:`session`."""

    def __init__(self, updater: Updater) -> None:
        self._updater = updater
        self._refreshed = False
        self._indexes: dict[tuple[str, str, str], BuildIndex | None] = {}
        self._failed: SutureError | None = None
        self.closed = False

    def find_latest(
        self, release: str, build_id: str, channel: str = "stable", at_most: int | None = None
    ) -> Offer | None:
        """The newest live level for exactly this kernel build and channel, or None.

        ``at_most`` caps the level (a sticky level): nothing above it is offered.

        Raises:
            UsageError: the release, build id or channel cannot name a target.
            FetchError: the repository could not be reached.
            VerificationError: its metadata or the level index failed verification.
        """
        folder = layout.kernel_dir(release, build_id, channel)
        index = self._index(release, build_id, channel)
        latest = index.latest(at_most) if index else None
        if index is None or latest is None:
            return None
        if not latest.path.startswith(f"{folder}/"):
            raise WrongBuildError(
                f"the level index of {folder} points to {latest.path}",
                expected=f"{release}/{build_id}",
                found=latest.path,
                hint="refused; tell the repository's operators",
            )
        target = self._lookup(latest.path)
        if target is None:
            raise VerificationError(
                f"the level index lists {latest.path}, but the signed targets do not",
                hint="the repository is inconsistent; tell its operators",
            )
        return self._offer(target, release, build_id, channel, index.yanked)

    def yanked(self, release: str, build_id: str, channel: str) -> tuple[int, ...]:
        """The levels withdrawn from this build and channel (none when it has no index).

        Raises:
            FetchError, VerificationError: as :meth:`find_latest`.
        """
        index = self._index(release, build_id, channel)
        return index.yanked if index else ()

    def download(self, offer: Offer, dest_dir: Path) -> Path:
        """Fetch ``offer``'s bundle into ``dest_dir``, verified, and return its path.

        The bytes must match the signed length and hashes, and the bundle's own
        manifest must name the same kernel build, name and level as the offer.
        On any failure nothing is left in ``dest_dir``.

        Raises:
            UpdateError: the offer comes from another session, or this one is over.
            FetchError: the repository could not be reached.
            IntegrityError: the bytes are not the signed ones (tampered, oversized).
            WrongBuildError: the bundle is for another kernel build.
            VerificationError: the bundle is malformed or describes another level.
        """
        if offer._session is not self:
            raise UpdateError(
                "this offer comes from another update session",
                hint="look it up again with find_latest in this session",
            )
        self._check_usable()
        final = dest_dir / layout.bundle_name(offer.name, offer.level)
        doing = f"downloading {offer.path}"
        with trust.translated(doing):
            dest_dir.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{final.name}.", dir=dest_dir)
            os.close(fd)
        partial = Path(name)
        try:
            with trust.translated(doing, target=offer.path):
                self._updater.download_target(offer._target, str(partial))
            _check_manifest(partial, offer)
            with trust.translated(doing):
                partial.replace(final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return final

    def _check_usable(self) -> None:
        if self.closed:
            raise UpdateError("the update session is over", hint="start a new session")
        if self._failed is not None:
            raise UpdateError(
                f"this update session failed earlier: {self._failed}",
                hint="start a new session",
            )

    def _lookup(self, path: str) -> TargetFile | None:
        self._check_usable()
        try:
            with trust.translated(CHECKING):
                if not self._refreshed:
                    self._updater.refresh()
                    self._refreshed = True
                return self._updater.get_targetinfo(path)
        except SutureError as e:
            # An Updater that failed half-way cannot be refreshed again.
            self._failed = e
            raise

    def _index(self, release: str, build_id: str, channel: str) -> BuildIndex | None:
        key = (release, build_id, channel)
        if key not in self._indexes:
            self._indexes[key] = self._read_index(release, build_id, channel)
        return self._indexes[key]

    def _read_index(self, release: str, build_id: str, channel: str) -> BuildIndex | None:
        path = layout.index_path(release, build_id, channel)
        target = self._lookup(path)
        if target is None:
            return None
        try:
            index = BuildIndex.from_json(self._small_target(target))
        except ValueError as e:
            raise VerificationError(
                f"{path}: the level index is malformed: {e}",
                hint="the repository is inconsistent; tell its operators",
            ) from e
        if (index.release, index.build_id, index.channel) != (release, build_id, channel):
            raise WrongBuildError(
                f"{path} describes {index.release}/{index.build_id} on {index.channel}",
                expected=f"{release}/{build_id}",
                found=f"{index.release}/{index.build_id}",
                hint="refused; tell the repository's operators",
            )
        return index

    def _small_target(self, target: TargetFile) -> bytes:
        """The bytes of a small target (an index), from the state folder's cache when current."""
        with trust.translated(f"downloading {target.path}", target=target.path):
            cached = self._updater.find_cached_target(target)
            local = cached or self._updater.download_target(target)
            data = Path(local).read_bytes()
            # Checked on these very bytes, not on the file as it was a moment ago.
            target.verify_length_and_hashes(data)
        return data

    def _offer(
        self,
        target: TargetFile,
        release: str,
        build_id: str,
        channel: str,
        yanked: tuple[int, ...],
    ) -> Offer:
        custom = target.custom if isinstance(target.custom, dict) else {}
        signed_for = (custom.get("release"), custom.get("build_id"), custom.get("channel"))
        if signed_for != (release, build_id, channel):
            raise WrongBuildError(
                f"{target.path} is signed for {signed_for[0]}/{signed_for[1]} on {signed_for[2]}",
                expected=f"{release}/{build_id}",
                found=f"{signed_for[0]}/{signed_for[1]}",
                hint="refused; tell the repository's operators",
            )
        level, name, cves = custom.get("level"), custom.get("name"), custom.get("cves", [])
        if not (
            isinstance(level, int)
            and isinstance(name, str)
            and isinstance(cves, list)
            and all(isinstance(c, str) for c in cves)
        ):
            raise VerificationError(
                f"{target.path}: its signed description lacks a level, name or CVE list",
                hint="the repository is inconsistent; tell its operators",
            )
        return Offer(
            release=release,
            build_id=build_id,
            channel=channel,
            level=level,
            name=name,
            cves=tuple(cves),
            path=target.path,
            length=target.length,
            sha256=target.hashes.get("sha256", ""),
            yanked=yanked,
            tested=labtest.signed_result(custom.get("test")),
            _target=target,
            _session=self,
        )


def _check_manifest(path: Path, offer: Offer) -> None:
    """Refuse a signed bundle whose own manifest does not say what its metadata says."""
    try:
        manifest = bundle.read_manifest(path)
    except BundleError as e:
        raise VerificationError(
            f"{offer.path} is signed but is not a valid bundle: {e}",
            check="manifest",
            hint="tell the repository's operators",
        ) from e
    if (manifest.release, manifest.build_id) != (offer.release, offer.build_id):
        raise WrongBuildError(
            f"{offer.path} is signed for {offer.release} ({offer.build_id[:12]}…), but the "
            f"bundle inside is for {manifest.release} ({manifest.build_id[:12]}…)",
            expected=f"{offer.release}/{offer.build_id}",
            found=f"{manifest.release}/{manifest.build_id}",
            hint="refused: a patch is never loaded on another build; tell the repository's "
            "operators",
        )
    if (manifest.name, manifest.level) != (offer.name, offer.level):
        raise VerificationError(
            f"{offer.path} is signed as {offer.name} level {offer.level}, but the bundle "
            f"inside is {manifest.name} level {manifest.level}",
            check="manifest",
            hint="refused; tell the repository's operators",
        )
