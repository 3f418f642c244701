"""``suture daemon``: the agent's cycle every ``check_interval`` (plus jitter), until stopped.

It runs under systemd as ``Type=notify`` (``packaging/systemd/suture-agent.service``):
it says READY once started, a STATUS line after each cycle, and STOPPING on
the way out. SIGTERM or SIGINT let the cycle under way finish (an apply is
never cut in half; a wait between retries is) and then end the loop with
exit 0. A clean stop is recorded, so the crash-loop guard can tell a
shutdown from a crash (:mod:`suture.agent.guard`).

The daemon never dies of a failed cycle. A Suture error is recorded by the
cycle itself; anything else (a bug, an error nobody typed) is recorded in
the state as ``internal``, reported to the fleet server, logged with its
traceback, and the next cycle comes after a wait that doubles with each
failure in a row (from ``retry_backoff`` up to ``check_interval``).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from suture.agent import cycle, guard, report
from suture.agent import state as agent_state
from suture.agent.config import AgentConfig
from suture.agent.host import HostKernel, Kernel
from suture.agent.outcome import ERROR
from suture.errors import InternalError, SutureError

log = logging.getLogger(__name__)


def _info(line: str) -> None:
    log.info("%s", line)


class _StopRequestedError(Exception):
    """A stop was asked for while a cycle waited to retry."""


def sd_notify(message: str) -> None:
    """Tell systemd (``$NOTIFY_SOCKET``) about the service's state; nothing without systemd."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(message.encode(), address)
    except OSError:
        pass  # systemd is gone or the socket is not ours: nothing to tell


class Daemon:
    """The loop; :meth:`stop` (from a signal handler) ends it after the cycle under way."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        kernel: Kernel | None = None,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.kernel = kernel or HostKernel()
        self.clock = clock
        self.jitter = jitter
        self._stop = threading.Event()
        self.cycles = 0
        self.failures = 0  # cycles in a row that ended in an unexpected error
        self._reapply: Any = None  # userlevels.Reapply, once a userspace level exists

    def stop(self) -> None:
        """Ask the loop to end; safe from a signal handler."""
        self._stop.set()

    def run(self, max_cycles: int | None = None) -> None:
        """Cycle until stopped (or ``max_cycles`` done), then record a clean stop."""
        self._mark_started()
        sd_notify("READY=1")
        log.info(
            "agent started: %s (%s), every %d s%s",
            self.config.server or "no server",
            self.config.channel,
            self.config.check_interval,
            "" if self.config.auto_update else ", check only",
        )
        try:
            while not self._stop.is_set():
                self.cycle()
                self.cycles += 1
                if max_cycles is not None and self.cycles >= max_cycles:
                    break
                self._wait()
        finally:
            sd_notify("STOPPING=1")
            if self._reapply is not None:
                self._reapply.close()
            self._mark_clean_stop()
            log.info("agent stopped")

    def cycle(self) -> None:
        """One cycle (:func:`suture.agent.cycle.run_cycle`); nothing going wrong ends the loop."""
        try:
            done = cycle.run_cycle(
                self.config, kernel=self.kernel, apply=self.config.auto_update,
                clock=self.clock, sleep=self._sleep,
            )  # fmt: skip
        except _StopRequestedError:
            line = "stopping before the cycle finished; nothing was applied"
            log.info("%s", line)
        except Exception as e:
            self.failures += 1
            line = f"internal error: {type(e).__name__}: {e}"
            log.exception("the cycle failed unexpectedly; the agent goes on")
            self._record(InternalError(line, hint="a Suture bug: report it with the agent's log"))
        else:
            self.failures = 0
            if done.error is not None:
                err = done.error
                line = f"error: {err.message}" + (f" ({err.hint})" if err.hint else "")
                log.error("%s", line)
            else:
                r = done.result
                line = f"{done.outcome}: level {r.level if r else 0} live"
                if r and r.available > r.level:
                    line += f", level {r.available} offered"
                log.info("%s", line)
        sd_notify(f"STATUS={line[:200]}")
        self._follow_new_processes()

    def _follow_new_processes(self) -> None:
        """Once a userspace level is live, patch processes as they start (a thread).

        Like the cycle, it never ends the loop: a failure is logged, and the
        next cycle's /proc scan patches what was missed.
        """
        if not (self.config.userspace and self.config.auto_update):
            return
        from suture.agent import userlevels  # noqa: PLC0415 - kernel-only hosts skip it

        try:
            if self._reapply is not None:
                self._reapply.refresh()
            elif userlevels.read(self.config.state_dir):
                self._reapply = userlevels.Reapply(self.config.state_dir, _info)
                self._reapply.start()
        except Exception:
            log.exception("following new processes failed; the next cycle scans /proc again")

    def _record(self, error: SutureError) -> None:
        """Keep an unexpected failure in the state and tell the fleet server; neither may fail."""
        try:
            with agent_state.locked(self.config.state_dir):
                current = agent_state.read(self.config.state_dir)
                agent_state.write(
                    self.config.state_dir,
                    replace(
                        current,
                        in_progress=None,
                        last_check=self.clock(),
                        last_result=ERROR,
                        last_error=error.to_dict(),
                    ),
                )
            failure = report.exchange(self.config, self.kernel, self.clock())
        except Exception as e:
            failure = f"could not record the failure: {e}"
        if failure:
            log.warning("%s", failure)

    def _backoff(self) -> float:
        """After unexpected failures in a row: a doubling wait, at most the check interval."""
        if not self.failures:
            return 0.0
        wait = self.config.retry_backoff * 2 ** min(self.failures - 1, 20)
        return float(min(max(wait, 1.0), self.config.check_interval))

    def _wait(self) -> None:
        """Sleep to the next check, waking at the end of a probation to confirm the level."""
        now = self.clock()
        backoff = self._backoff()
        interval = backoff or self.config.check_interval + self.jitter() * self.config.check_jitter
        due = now + interval
        try:
            with agent_state.locked(self.config.state_dir):
                current = agent_state.read(self.config.state_dir)
            confirm = guard.confirm_at(current, self.kernel.boot_id(), self.config.crash_guard)
        except SutureError as e:
            log.warning("%s", e.message)
            confirm = None
        if confirm is not None and now < confirm < due:
            if self._stop.wait(confirm - now + 1):
                return
            self._confirm()
            now = self.clock()
        self._stop.wait(max(0.0, due - now))

    def _confirm(self) -> None:
        try:
            with agent_state.locked(self.config.state_dir):
                current = agent_state.read(self.config.state_dir)
                a, boot = current.applied, self.kernel.boot_id()
                if a and guard.confirmable(current, boot, self.clock(), self.config.crash_guard):
                    agent_state.write(
                        self.config.state_dir, replace(current, applied=replace(a, confirmed=True))
                    )
                    log.info("level %d survived its probation: confirmed", a.level)
        except SutureError as e:
            log.warning("could not confirm the level: %s", e.message)

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _StopRequestedError

    def _mark_started(self) -> None:
        # A stop mark left by an earlier run of the daemon in this boot must
        # not vouch for a crash that comes later in it.
        try:
            self.config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            with agent_state.locked(self.config.state_dir):
                current = agent_state.read(self.config.state_dir)
                if current.clean_shutdown_boot:
                    agent_state.write(
                        self.config.state_dir, replace(current, clean_shutdown_boot="")
                    )
        except (OSError, SutureError) as e:
            log.warning("could not clear the clean-stop mark: %s", getattr(e, "message", e))

    def _mark_clean_stop(self) -> None:
        try:
            with agent_state.locked(self.config.state_dir):
                current = agent_state.read(self.config.state_dir)
                boot = self.kernel.boot_id()
                agent_state.write(self.config.state_dir, replace(current, clean_shutdown_boot=boot))
        except SutureError as e:
            log.warning("could not record the clean stop: %s", e.message)
