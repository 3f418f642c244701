"""One update cycle: is there a newer level for this exact kernel build? Fetch it, apply it.

:func:`run_update` is what ``suture update`` and the daemon call::

    identity -> recover an interrupted run -> confirm a level that survived probation
      -> newest level (channel, sticky) -> newer than the live one, not held?
      -> download verified -> mark in progress
      -> apply (cumulative: it replaces the level before) -> record, clear the mark

A server that cannot be reached (or answers 5xx, or too slowly) is tried
again ``retries`` times with a doubling wait; the live level stays as it is.
When the repository's timestamp is byte for byte the one verified last time,
the last answer stands without loading the TUF client (:mod:`suture.agent.quick`).

:func:`check` is the same question without applying (``suture info``).
The kernel sits behind :class:`Kernel` and the network behind python-tuf's
fetcher, so tests run the real repository code with a fake kernel.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from suture.agent import guard, quick
from suture.agent import state as agent_state
from suture.agent.config import AgentConfig
from suture.agent.host import HostKernel, Kernel
from suture.agent.state import AgentState, Applied, InProgress, Offered
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


class Outcome(StrEnum):
    """What a cycle found or did."""

    UP_TO_DATE = "up-to-date"  # the newest level allowed is live
    APPLIED = "applied"  # a newer level was applied
    PENDING = "pending"  # a newer level is offered, not applied (check, or update delay)
    NO_PATCHES = "no-patches"  # the repository has no level for this build and channel
    UNSUPPORTED = "unsupported"  # no livepatch core, or no build id: nothing can be applied
    HELD = "held"  # the newest level crashed this host before; the crash guard holds it


@dataclass(frozen=True)
class UpdateResult:
    """What :func:`run_update` or :func:`check` found, and did."""

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
            **({"userspace": list(self.userspace)} if self.userspace else {}),
        }


def run_update(
    config: AgentConfig,
    *,
    kernel: Kernel | None = None,
    fetcher: FetcherInterface | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] | None = None,
    honour_delay: bool = True,
    clear_hold: bool = False,
) -> UpdateResult:
    """Bring this host to the newest level its configuration allows, and record it.

    Args:
        config: server, channel, sticky level, delay, state folder, trusted root.
        kernel: the kernel to drive (default :class:`HostKernel`).
        fetcher: python-tuf fetcher (default: by URL scheme).
        clock: unix time, s.
        sleep: waits between retries.
        log: where a retry is announced (default stderr).
        honour_delay: wait ``update_delay_hours`` after a level is first seen.
        clear_hold: forget the crash guard's hold first (an operator's decision).

    Raises:
        SutureError: any failure (config, fetch, verification, pre-flight, load,
            transition). It is recorded in the state first; the kernel runs as before.
    """
    kernel = kernel or HostKernel()
    with agent_state.locked(config.state_dir):
        run = _Run(config, kernel, fetcher, clock(), agent_state.read(config.state_dir))
        if clear_hold and run.state.held:
            run.save(held=None)
        try:
            result = _retrying(lambda: run.run(honour_delay), config, sleep, log or _stderr)
        except SutureError as e:
            run.save(
                in_progress=None, last_check=run.now, last_result="error", last_error=e.to_dict()
            )
            raise
        run.save(last_check=run.now, last_result=str(result.outcome), last_error=None)
        if config.userspace and config.server:
            result = replace(result, userspace=tuple(_userspace(config, run, log or _stderr)))
        return result


def _userspace(config: AgentConfig, run: _Run, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The userspace levels' part of the cycle; its failure leaves the kernel's result as it is."""
    from suture.agent import userlevels  # noqa: PLC0415 - only hosts that run it pay for it

    try:
        return userlevels.update(config, run.session, log)
    except SutureError as e:
        log(f"userspace levels: {e.message}")
        return [{"error": f"{type(e).__name__}: {e.message}"}]


def _retrying(
    attempt: Callable[[], UpdateResult],
    config: AgentConfig,
    sleep: Callable[[float], None],
    log: Callable[[str], None],
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
            log(f"{e.message}; trying again in {wait:g} s")
            sleep(wait)
            wait *= 2
    return attempt()


def check(
    config: AgentConfig,
    *,
    kernel: Kernel | None = None,
    fetcher: FetcherInterface | None = None,
) -> UpdateResult:
    """What the repository offers this kernel build, against the live level; applies nothing.

    Raises:
        SutureError: the configuration, the repository or its verification failed.
    """
    kernel = kernel or HostKernel()
    run = _Run(config, kernel, fetcher, time.time(), agent_state.read(config.state_dir))
    ident = kernel.identity()
    if not _supported(ident):
        return run.result(Outcome.UNSUPPORTED, ident, 0)
    live = run.live_level(ident, kernel.live_patches())
    with run.session() as s:
        offer = _find(s, ident, config.channel, run.cap())
    if offer is None:
        return run.result(Outcome.NO_PATCHES, ident, live)
    outcome = Outcome.PENDING if offer.level > live else Outcome.UP_TO_DATE
    return run.result(outcome, ident, live, offer=offer)


def _supported(ident: KernelIdentity) -> bool:
    return ident.livepatch and bool(ident.build_id)


class _Run:
    """One cycle's working set: the state as last written, and the time it started."""

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
        self.state = replace(self.state, **changes)
        agent_state.write(self.config.state_dir, self.state)

    def live_level(self, ident: KernelIdentity, live: set[str]) -> int:
        """The recorded level, if its patch is still enabled (not after a reboot or unload)."""
        a = self.state.applied
        return self.state.level_for(ident.release, ident.build_id) if a and a.patch in live else 0

    def run(self, honour_delay: bool) -> UpdateResult:  # noqa: PLR0911 - one return per outcome
        ident = self.kernel.identity()
        if not _supported(ident):
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
            self.remember(ident, cap, offer)
            if offer is None:
                return self.result(Outcome.NO_PATCHES, ident, live)
            # Down only when the fleet server unrolls: a sticky level or a
            # halt only stops the climb.
            unrolling = self.state.unroll and offer.level < live
            if offer.level <= live and not unrolling:
                return self.result(Outcome.UP_TO_DATE, ident, live, offer=offer)
            if guard.holds(self.state, ident.release, ident.build_id, offer.level):
                return self.result(Outcome.HELD, ident, live, offer=offer)
            if honour_delay and self._delayed(offer.level):
                return self.result(Outcome.PENDING, ident, live, offer=offer)
            path = s.download(offer, bundles)
        return self._apply(ident, live, offer, path)

    def _apply(
        self, ident: KernelIdentity, live: int, offer: update.Offer, path: Path
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
        except Exception:  # the engine backed out; killed runs keep the bundle for recovery
            if not (old and old.bundle == path):
                path.unlink(missing_ok=True)
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
            old.bundle.unlink(missing_ok=True)
        return self.result(
            Outcome.APPLIED, ident, offer.level, offer=offer, previous=live, superseded=superseded
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

    def _sweep(self) -> None:
        """Remove bundles no record points to: leftovers of runs killed mid-download or mid-swap."""
        records = (self.state.applied, self.state.in_progress)
        keep = {x.bundle.name for x in records if x is not None}  # names: paths may differ in form
        folder = self.config.state_dir / agent_state.BUNDLES
        for path in folder.iterdir() if folder.is_dir() else ():
            if path.name not in keep and path.is_file():
                path.unlink(missing_ok=True)

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
        from suture.agent import trust, update  # noqa: PLC0415 - see the imports

        remote = _remote(self.config)
        proxied = self.fetcher is None and bool(self.config.proxy)
        with _proxy_environment(self.config.proxy) if proxied else contextlib.nullcontext():
            # made inside the proxy context: the fetcher reads *_proxy when made
            fetcher = self.fetcher or trust.default_fetcher(remote.url, self.config.timeout)
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
    ) -> UpdateResult:
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
        )


def _stderr(line: str) -> None:
    print(f"suture: {line}", file=sys.stderr, flush=True)


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
    return trust.Remote(url=config.server, trusted_root=root)


def _find(
    s: update.UpdateSession, ident: KernelIdentity, channel: str, sticky: int | None
) -> update.Offer | None:
    """The newest live level for this build and channel, not above ``sticky``."""
    return s.find_latest(ident.release, ident.build_id, channel, at_most=sticky)


@contextlib.contextmanager
def _proxy_environment(proxy: str) -> Iterator[None]:
    # python-tuf's urllib3 fetcher takes its proxy from the *_proxy variables
    # when it is made (inside update.session); set them for that long only.
    names = ("http_proxy", "https_proxy")
    saved = {n: os.environ.get(n) for n in names}
    os.environ.update(dict.fromkeys(names, proxy))
    try:
        yield
    finally:
        for n, value in saved.items():
            if value is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = value
