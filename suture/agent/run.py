"""The update step of a cycle, from the state as last written to the kernel and back.

:class:`UpdateRun` is one run's working set (the state as last written, the
time it started) and its steps::

    recover an interrupted run -> sweep leftovers -> confirm a level that survived probation
      -> newest level (channel, sticky, the fleet's cap) -> a yank of the live level?
      -> newer than the live one, not held, not delayed?
      -> download verified -> mark in progress -> apply -> record, clear the mark

Every step that changes the host writes the state first, so a run killed at
any point leaves what the next run needs (ADR 5). The public entry points
are in :mod:`suture.agent.cycle`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from suture import jsontypes
from suture.agent import guard, quick
from suture.agent import state as agent_state
from suture.agent.config import AgentConfig
from suture.agent.host import Kernel
from suture.agent.outcome import Outcome
from suture.agent.state import AgentState, Applied, InProgress, Offered, Withdrawn
from suture.errors import ConfigError, FetchError, SutureError
from suture.kernel.identity import KernelIdentity

if TYPE_CHECKING:
    from tuf.ngclient import FetcherInterface

    from suture.agent import trust, update

# The TUF client (trust, update) is imported only when the repository changed
# or the last answer cannot be reused (suture.agent.quick): it is most of the
# CPU of a no-change run.

FORMAT_VERSION = 1
HOUR = 3600.0  # s

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpdateResult:
    """What an update or a check found, and did."""

    outcome: Outcome
    release: str
    build_id: str
    channel: str
    level: int  # live after the run (0: none)
    previous: int = 0  # live before the run
    available: int = 0  # newest level offered within the sticky level (0: none)
    name: str = ""  # the offered patch
    cves: tuple[str, ...] = ()  # what the offered level fixes (cumulative)
    superseded: tuple[str, ...] = ()
    recovered: bool = False  # a run killed while applying was found (and finished)
    sticky_level: int | None = None
    tested: str = ""  # the offered level's signed test result ("": no offer, or not known)
    withdrawn: int = 0  # a live level the repository yanked, which this run left (0: none)
    userspace: tuple[dict[str, Any], ...] = ()  # per library build (suture.agent.userlevels.rows)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "format": FORMAT_VERSION,
            "outcome": str(self.outcome),
            "kernel": {"release": self.release, "build_id": self.build_id},
            "channel": self.channel,
            "level": self.level,
            "previous": self.previous,
            "available": self.available,
            "name": self.name,
            "cves": list(self.cves),
            "superseded": list(self.superseded),
            "recovered": self.recovered,
            "sticky_level": self.sticky_level,
            "tested": self.tested or None,
            "withdrawn": self.withdrawn or None,
            **({"userspace": list(self.userspace)} if self.userspace else {}),
        }


def supported(ident: KernelIdentity) -> bool:
    """True when a live patch can be applied to this kernel at all."""
    return ident.livepatch and bool(ident.build_id)


class UpdateRun:
    """One run's working set: the state as last written, and the time it started."""

    def __init__(
        self,
        config: AgentConfig,
        kernel: Kernel,
        fetcher: FetcherInterface | None,
        now: float,
        current: AgentState,
    ) -> None:
        self.config = config
        self.kernel = kernel
        self.fetcher = fetcher
        self.now = now
        self.state = current
        self.recovered = False

    def save(self, **changes: Any) -> None:
        """Change the state and write it (atomically) before anything else happens."""
        self.state = replace(self.state, **changes)
        agent_state.write(self.config.state_dir, self.state)

    def live_level(self, ident: KernelIdentity, live: set[str]) -> int:
        """The level live in memory (:meth:`AgentState.live_level`)."""
        return self.state.live_level(ident.release, ident.build_id, live)

    def run(self, honour_delay: bool) -> UpdateResult:  # noqa: PLR0911 - one return per outcome
        """Bring the kernel to the newest level allowed (or off a withdrawn one)."""
        ident = self.kernel.identity()
        if not supported(ident):
            return self.result(Outcome.UNSUPPORTED, ident, 0)
        live_patches = self.kernel.live_patches()
        self._recover(ident, live_patches)
        self._sweep()
        self.confirm()
        live = self.live_level(ident, live_patches)
        # A fetcher given by the caller (tests, mirrors) is the only way in.
        cap = self.cap()
        memo = self.fetcher is None and quick.unchanged(
            self.config, self.state, ident, cap, live, self.now
        )
        if memo:
            return self.result(Outcome.UP_TO_DATE, ident, live, offer=memo)
        bundles = self.config.state_dir / agent_state.BUNDLES
        with self.session() as s:
            offer = _find(s, ident, self.config.channel, cap)
            yanked = s.yanked(ident.release, ident.build_id, self.config.channel)
            self.remember(ident, cap, offer)
            withdrawn = live if live and live in yanked else 0
            if withdrawn:
                # Recorded before anything else: from now on neither this
                # cycle nor `suture boot` applies that level again.
                self._withdraw(ident, withdrawn)
            if offer is None or (
                withdrawn and guard.holds(self.state, ident.release, ident.build_id, offer.level)
            ):
                if withdrawn:
                    return self._remove(ident, live)
                return self.result(Outcome.NO_PATCHES, ident, live)
            # Down only when the fleet server unrolls or the live level was
            # withdrawn: a sticky level or a halt only stops the climb.
            down = (self.state.unroll and offer.level < live) or bool(withdrawn)
            if offer.level <= live and not down:
                return self.result(Outcome.UP_TO_DATE, ident, live, offer=offer)
            if guard.holds(self.state, ident.release, ident.build_id, offer.level):
                return self.result(Outcome.HELD, ident, live, offer=offer)
            if honour_delay and not withdrawn and self._delayed(offer.level):
                return self.result(Outcome.PENDING, ident, live, offer=offer)
            path = s.download(offer, bundles)
        return self._apply(ident, live, offer, path, withdrawn)

    def _withdraw(self, ident: KernelIdentity, level: int) -> None:
        seen = Withdrawn(ident.release, ident.build_id, level)
        if seen not in self.state.withdrawn:
            kept = (*self.state.withdrawn, seen)[-agent_state.MAX_WITHDRAWN :]
            self.save(withdrawn=kept)
            log.warning("level %d was withdrawn from the repository: leaving it", level)

    def _remove(self, ident: KernelIdentity, live: int) -> UpdateResult:
        """Take the withdrawn live level off the kernel when no level is left to go to."""
        a = self.state.applied
        if a is not None:  # always, for a live level
            self.kernel.unload(a.patch)
            self.save(applied=None)
            _discard(a.bundle)
        return self.result(Outcome.REMOVED, ident, 0, previous=live, withdrawn=live)

    def _apply(
        self, ident: KernelIdentity, live: int, offer: update.Offer, path: Path, withdrawn: int
    ) -> UpdateResult:
        # The mark goes to disk before the kernel changes: a run killed in
        # between leaves it, and the next run finds out what happened.
        self.save(
            in_progress=InProgress(offer.level, offer.name, path, self.now),
            attempted_level=offer.level,
        )
        old = self.state.applied
        try:
            superseded = self.kernel.apply(path)
        except Exception:
            # The engine backed out: the bundle goes. Unless the patch is still
            # in the kernel (a failed back-out), as a killed run keeps it too:
            # the next run records it from the mark, and boot needs the file.
            if not (old and old.bundle == path) and self.unfinished() is None:
                _discard(path)
            raise
        applied = Applied(
            offer.level,
            offer.name,
            path,
            ident.release,
            ident.build_id,
            self.now,
            boot_id=self.kernel.boot_id(),
            sha256=_sha256(path),
            cves=offer.cves,
        )
        self.save(applied=applied, in_progress=None)
        if old and old.bundle != path:
            _discard(old.bundle)
        return self.result(
            Outcome.APPLIED,
            ident,
            offer.level,
            offer=offer,
            previous=live,
            superseded=superseded,
            withdrawn=withdrawn,
        )

    def _recover(self, ident: KernelIdentity, live: set[str]) -> None:
        """Finish the record of a run killed while applying.

        If the marked patch is enabled (and is not the one applied before),
        the apply went through: record it. Otherwise the engine never got
        that far, or the module was backed out: forget the mark, and this
        run applies the newest level again.
        """
        mark = self.state.in_progress
        if mark is None:
            return
        self.recovered = True
        before = self.state.applied
        if mark.patch in live and not (before and before.patch == mark.patch):
            done = Applied(
                mark.level,
                mark.patch,
                mark.bundle,
                ident.release,
                ident.build_id,
                self.now,
                boot_id=self.kernel.boot_id(),
                sha256=_sha256(mark.bundle) if mark.bundle.exists() else "",
            )
            self.save(applied=done, in_progress=None)
        else:
            self.save(in_progress=None)

    def unfinished(self) -> InProgress | None:
        """The mark to keep after a failed apply: kept while its patch is still in the kernel.

        An apply whose back-out failed leaves the patch enabled (the kernel
        finishes the transition by itself); the next run must find it through
        the mark and record it, not apply it again over itself.
        """
        mark = self.state.in_progress
        if mark is None:
            return None
        try:
            return mark if mark.patch in self.kernel.live_patches() else None
        except SutureError:
            return mark  # the kernel cannot be read now: let the next run find out

    def _sweep(self) -> None:
        """Remove bundles no record points to: leftovers of runs killed mid-download or mid-swap."""
        records = (self.state.applied, self.state.in_progress)
        keep = {x.bundle.name for x in records if x is not None}  # names: paths may differ in form
        folder = self.config.state_dir / agent_state.BUNDLES
        for path in folder.iterdir() if folder.is_dir() else ():
            if path.name not in keep and path.is_file():
                _discard(path)

    def cap(self) -> int | None:
        """The highest level allowed: the configured sticky level and the fleet server's cap."""
        caps = [c for c in (self.config.sticky_level, self.state.max_level) if c is not None]
        return min(caps) if caps else None

    def remember(self, ident: KernelIdentity, cap: int | None, offer: update.Offer | None) -> None:
        """Keep the full check's answer for :func:`suture.agent.quick.unchanged`."""
        memo = offer and Offered(
            quick.offered_key(self.config, ident, cap),
            offer.level,
            offer.name,
            offer.cves,
            offer.tested,
        )
        if memo != self.state.offered:
            self.save(offered=memo)

    def confirm(self) -> None:
        """End the applied level's probation once it has lasted the crash guard's time."""
        a, boot = self.state.applied, self.kernel.boot_id()
        if a and guard.confirmable(self.state, boot, self.now, self.config.crash_guard):
            self.save(applied=replace(a, confirmed=True))

    def _delayed(self, level: int) -> bool:
        """True while ``level`` was first seen less than ``update_delay_hours`` ago."""
        if self.config.update_delay_hours <= 0:
            return False
        seen_at = self.state.seen_at
        if self.state.seen_level != level or seen_at is None:
            seen_at = self.now
            self.save(seen_level=level, seen_at=seen_at)
        return self.now - seen_at < self.config.update_delay_hours * HOUR

    @contextlib.contextmanager
    def session(self) -> Iterator[update.UpdateSession]:
        """An update session against the configured repository (loads the TUF client)."""
        from suture.agent import trust, update  # noqa: PLC0415 - see the imports

        remote = _remote(self.config)
        fetcher = self.fetcher or trust.default_fetcher(
            remote.url, self.config.timeout, self.config.proxy, _progress
        )
        with update.session(remote, self.config.state_dir, fetcher=fetcher) as s:
            yield s

    def result(
        self,
        outcome: Outcome,
        ident: KernelIdentity,
        level: int,
        *,
        offer: update.Offer | Offered | None = None,
        previous: int | None = None,
        superseded: list[str] | None = None,
        withdrawn: int = 0,
    ) -> UpdateResult:
        """The run's result, from what it found."""
        return UpdateResult(
            outcome=outcome,
            release=ident.release,
            build_id=ident.build_id,
            channel=self.config.channel,
            level=level,
            previous=level if previous is None else previous,
            available=offer.level if offer else 0,
            name=offer.name if offer else "",
            cves=offer.cves if offer else (),
            superseded=tuple(superseded or ()),
            recovered=self.recovered,
            sticky_level=self.config.sticky_level,
            tested=offer.tested if offer else "",
            withdrawn=withdrawn,
        )


def _progress(url: str, size: int, total: int) -> None:
    share = f" ({100 * size // total}%)" if total else ""
    log.info("downloading %s: %d of %s bytes%s", url.rsplit("/", 1)[-1], size, total or "?", share)


def _discard(path: Path) -> None:
    """Remove a bundle no record needs; one that stays is swept by a later run."""
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        log.warning("cannot remove %s (%s); a later run removes it", path, e.strerror or e)


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _remote(config: AgentConfig) -> trust.Remote:
    from suture.agent import trust  # noqa: PLC0415 - see the imports

    if not config.server:
        raise ConfigError(
            "no patch server is configured",
            key="server",
            hint="set server in /etc/suture/agent.toml, $SUTURE_SERVER or --server",
        )
    try:
        root = config.trusted_root.read_bytes()
    except OSError as e:
        raise ConfigError(
            f"cannot read the trusted root {config.trusted_root}: {e.strerror}",
            key="trusted_root",
            hint="install the repository's root.json (its 1.root.json) out of band, "
            "or give --trusted-root",
        ) from e
    _check_root(config.trusted_root, root)
    return trust.Remote(url=config.server, trusted_root=root)


def _check_root(path: Path, raw: bytes) -> None:
    """A trusted root that is not root metadata at all is a configuration mistake, not an attack.

    Whether its signatures hold is TUF's to check (a verification failure);
    a file that is not JSON, or JSON of another role, was given by mistake.
    """
    try:
        data = jsontypes.loads(raw)
        kind = data["signed"]["_type"] if isinstance(data, dict) else None
    except (ValueError, KeyError, TypeError):
        kind = None
    if kind != "root":
        raise ConfigError(
            f"{path} is not a TUF root metadata file"
            + (f" (it is {kind} metadata)" if isinstance(kind, str) else ""),
            key="trusted_root",
            hint="give the repository's metadata/1.root.json (or a later N.root.json)",
        )


def _find(
    s: update.UpdateSession, ident: KernelIdentity, channel: str, sticky: int | None
) -> update.Offer | None:
    """The newest live level for this build and channel, not above ``sticky``."""
    return s.find_latest(ident.release, ident.build_id, channel, at_most=sticky)


def retrying(
    attempt: Callable[[], UpdateResult],
    config: AgentConfig,
    sleep: Callable[[float], None],
    announce: Callable[[str], None],
) -> UpdateResult:
    """``attempt()``, tried again on :class:`FetchError` (and only on it) with a doubling wait.

    A verification error is never retried: what was served must not be
    trusted, and asking again would only fetch it again.
    """
    wait = config.retry_backoff
    for _ in range(config.retries):
        try:
            return attempt()
        except FetchError as e:
            announce(f"{e.message}; trying again in {wait:g} s")
            sleep(wait)
            wait *= 2
    return attempt()
