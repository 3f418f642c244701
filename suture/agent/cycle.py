"""The agent's cycle: check in, update, check in again when something changed, write metrics.

:func:`run_cycle` is what ``suture update`` and the daemon both run::

    check in (brings the fleet server's directive: the level this host may run)
      -> update (or, with auto_update off, only check)
      -> check in again when the host changed (applied, removed, held, or failed)
      -> refresh the metrics file

:func:`run_update` is the update step alone (:mod:`suture.agent.run`): newest
level for this exact build, downloaded and verified, applied, recorded. A
server that cannot be reached (or answers 5xx, or too slowly) is tried again
``retries`` times with a doubling wait; the live level stays as it is. When
the repository's timestamp is byte for byte the one verified last time, the
last answer stands without loading the TUF client (:mod:`suture.agent.quick`).
:func:`check` asks the same question without applying (``suture info``).

The kernel sits behind :class:`~suture.agent.host.Kernel` and the network
behind python-tuf's fetcher, so tests run the real repository code with a
fake kernel.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from suture.agent import metrics, report
from suture.agent import state as agent_state
from suture.agent.config import AgentConfig
from suture.agent.host import HostKernel, Kernel
from suture.agent.outcome import ERROR, Outcome
from suture.agent.run import UpdateResult, UpdateRun, retrying, supported
from suture.errors import InternalError, SutureError

if TYPE_CHECKING:
    from tuf.ngclient import FetcherInterface

__all__ = ["CycleResult", "Outcome", "UpdateResult", "check", "run_cycle", "run_update"]

log = logging.getLogger(__name__)

# Outcomes after which the fleet server hears of the host again in the same cycle.
CHANGED = (Outcome.APPLIED, Outcome.REMOVED, Outcome.HELD)


@dataclass(frozen=True)
class CycleResult:
    """One cycle: the update's result or its error, and what went wrong on the side.

    Attributes:
        result: the update's (or check's) result; None when it failed.
        error: why it failed; None when it did not.
        warnings: check-ins not taken, a metrics file not written: the cycle
            went on without them.
    """

    result: UpdateResult | None
    error: SutureError | None
    warnings: tuple[str, ...] = ()

    @property
    def outcome(self) -> str:
        """The result's outcome, or ``error``."""
        return str(self.result.outcome) if self.result else ERROR

    def unwrap(self) -> UpdateResult:
        """The result; the cycle's error is raised instead when it failed.

        Raises:
            SutureError: the cycle's error.
        """
        if self.error is not None:
            raise self.error
        if self.result is None:
            raise InternalError("the cycle ended without a result or an error")
        return self.result


def run_cycle(
    config: AgentConfig,
    *,
    kernel: Kernel | None = None,
    apply: bool = True,
    honour_delay: bool = True,
    clear_hold: bool = False,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> CycleResult:
    """Check in, update (``apply``) or only check, check in again if anything changed, metrics.

    A Suture error of the update is returned, not raised: it is recorded in
    the state and reported first. Check-in and metrics failures never fail
    the cycle. Anything else (a bug) propagates.

    Args:
        config: the agent's configuration.
        kernel: the kernel to drive (default :class:`HostKernel`).
        apply: apply what is found (False: only check, as the daemon does
            without auto_update).
        honour_delay: wait ``update_delay_hours`` after a level is first seen.
        clear_hold: forget the crash guard's hold first (an operator's decision).
        clock: unix time, s.
        sleep: waits between retries (the daemon's wakes up on SIGTERM).
    """
    kernel = kernel or HostKernel()
    warnings: list[str] = []

    def check_in() -> None:
        try:
            failure = report.exchange(config, kernel, clock())
        except SutureError as e:
            failure = e.message
        if failure:
            log.warning("%s", failure)
            warnings.append(failure)

    check_in()  # brings the fleet server's directive into this cycle
    result: UpdateResult | None = None
    error: SutureError | None = None
    try:
        if apply:
            result = run_update(
                config, kernel=kernel, clock=clock, sleep=sleep, honour_delay=honour_delay,
                clear_hold=clear_hold,
            )  # fmt: skip
        else:
            result = check(config, kernel=kernel)
    except SutureError as e:
        error = e
    if error is not None or (result is not None and _changed(result)):
        check_in()  # says what came of it
    try:
        metrics.write(config, kernel)
    except SutureError as e:  # the metrics file is a view: it never fails a cycle
        log.warning("%s", e.message)
        warnings.append(e.message)
    return CycleResult(result, error, tuple(warnings))


def _changed(result: UpdateResult) -> bool:
    """The host changed in this cycle: a level applied, removed or held, or a userspace level."""
    return result.outcome in CHANGED or any(row.get("applied") for row in result.userspace)


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
        log: where a retry is announced (default: the agent's log, as a warning).
        honour_delay: wait ``update_delay_hours`` after a level is first seen.
        clear_hold: forget the crash guard's hold first (an operator's decision).

    Raises:
        SutureError: any failure (config, fetch, verification, pre-flight, load,
            transition). It is recorded in the state first; the kernel runs as before.
    """
    kernel = kernel or HostKernel()
    announce = log or _log_warning
    with agent_state.locked(config.state_dir):
        run = UpdateRun(config, kernel, fetcher, clock(), agent_state.read(config.state_dir))
        if clear_hold and run.state.held:
            run.save(held=None)
        try:
            result = retrying(lambda: run.run(honour_delay), config, sleep, announce)
        except SutureError as e:
            run.save(
                in_progress=run.unfinished(),
                last_check=run.now,
                last_result=ERROR,
                last_error=e.to_dict(),
            )
            raise
        run.save(last_check=run.now, last_result=str(result.outcome), last_error=None)
        if config.userspace and config.server:
            result = replace(result, userspace=tuple(_userspace(config, run, log or _log_info)))
        return result


def _log_warning(line: str) -> None:
    log.warning("%s", line)


def _log_info(line: str) -> None:
    log.info("%s", line)


def _userspace(
    config: AgentConfig, run: UpdateRun, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """The userspace levels' part of the cycle; its failure leaves the kernel's result as it is."""
    from suture.agent import userlevels  # noqa: PLC0415 - only hosts that run it pay for it

    try:
        rows = userlevels.update(config, run.session, say)
    except SutureError as e:
        log.warning("userspace levels: %s", e.message)
        return [{"error": f"{e.code}: {e.message}"}]
    for row in rows:  # a failure with one library build: the others went on
        if "error" in row:
            log.warning(
                "userspace level of %s: %s", row.get("soname", row["build_id"]), row["error"]
            )
    return rows


def check(
    config: AgentConfig,
    *,
    kernel: Kernel | None = None,
    fetcher: FetcherInterface | None = None,
) -> UpdateResult:
    """What the repository offers this kernel build, against the live level; applies nothing.

    A live level the repository withdrew is ``pending`` (an update leaves it).

    Raises:
        SutureError: the configuration, the repository or its verification failed.
    """
    kernel = kernel or HostKernel()
    run = UpdateRun(config, kernel, fetcher, time.time(), agent_state.read(config.state_dir))
    ident = kernel.identity()
    if not supported(ident):
        return run.result(Outcome.UNSUPPORTED, ident, 0)
    live = run.live_level(ident, kernel.live_patches())
    with run.session() as s:
        offer = s.find_latest(ident.release, ident.build_id, config.channel, at_most=run.cap())
        yanked = live in s.yanked(ident.release, ident.build_id, config.channel)
    if yanked:
        return run.result(Outcome.PENDING, ident, live, offer=offer, withdrawn=live)
    if offer is None:
        return run.result(Outcome.NO_PATCHES, ident, live)
    outcome = Outcome.PENDING if offer.level > live else Outcome.UP_TO_DATE
    return run.result(outcome, ident, live, offer=offer)
