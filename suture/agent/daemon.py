"""``suture daemon``: check in every ``check_interval`` (plus jitter), apply or only check, report.

It runs under systemd as ``Type=notify`` (``packaging/systemd/suture-agent.service``):
it says READY once started, a STATUS line after each cycle, and STOPPING on
the way out. SIGTERM or SIGINT let the cycle under way finish (an apply is
never cut in half; a wait between retries is) and then end the loop with
exit 0. A clean stop is recorded, so the crash-loop guard can tell a
shutdown from a crash (:mod:`suture.agent.guard`).
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from suture.agent import cycle, guard, metrics, report
from suture.agent import state as agent_state
from suture.agent.config import AgentConfig
from suture.agent.host import HostKernel, Kernel
from suture.errors import SutureError


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
        log: Callable[[str], None],
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.kernel = kernel or HostKernel()
        self.log = log
        self.clock = clock
        self.jitter = jitter
        self._stop = threading.Event()
        self.cycles = 0
        self._reapply: Any = None  # userlevels.Reapply, once a userspace level exists

    def stop(self) -> None:
        """Ask the loop to end; safe from a signal handler."""
        self._stop.set()

    def run(self, max_cycles: int | None = None) -> None:
        """Cycle until stopped (or ``max_cycles`` done), then record a clean stop."""
        self._mark_started()
        sd_notify("READY=1")
        self.log(
            f"agent started: {self.config.server or 'no server'} ({self.config.channel}), "
            f"every {self.config.check_interval} s"
            + ("" if self.config.auto_update else ", check only")
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
            self.log("agent stopped")

    def cycle(self) -> None:
        """Check in, check (and apply, with auto_update), check in again if anything changed.

        The first check-in brings the fleet server's directive (the level
        this host may run) into the cycle; the second one reports the result.
        Errors are logged; the next cycle tries again.
        """
        self._check_in()
        changed = True
        try:
            if self.config.auto_update:
                result = cycle.run_update(
                    self.config, kernel=self.kernel, sleep=self._sleep, log=self.log
                )
            else:
                result = cycle.check(self.config, kernel=self.kernel)
            changed = result.outcome in (cycle.Outcome.APPLIED, cycle.Outcome.HELD)
            changed |= any(row.get("applied") for row in result.userspace)
            line = f"{result.outcome}: level {result.level} live"
            if result.available > result.level:
                line += f", level {result.available} offered"
        except _StopRequestedError:
            line = "stopping before the cycle finished; nothing was applied"
        except SutureError as e:
            line = f"error: {e.message}" + (f" ({e.hint})" if e.hint else "")
        self.log(line)
        sd_notify(f"STATUS={line[:200]}")
        if changed:
            self._check_in()
        self._write_metrics()
        self._follow_new_processes()

    def _follow_new_processes(self) -> None:
        """Once a userspace level is live, patch processes as they start (a thread)."""
        if not (self.config.userspace and self.config.auto_update):
            return
        from suture.agent import userlevels  # noqa: PLC0415 - kernel-only hosts skip it

        if self._reapply is not None:
            self._reapply.refresh()
        elif userlevels.read(self.config.state_dir):
            self._reapply = userlevels.Reapply(self.config.state_dir, self.log)
            self._reapply.start()

    def _write_metrics(self) -> None:
        try:
            metrics.write(self.config, self.kernel)
        except SutureError as e:
            self.log(e.message)  # the metrics file is a view: it never fails a cycle

    def _check_in(self) -> None:
        try:
            failure = report.exchange(self.config, self.kernel, self.clock())
        except SutureError as e:
            failure = e.message
        if failure:
            self.log(failure)

    def _wait(self) -> None:
        """Sleep to the next check, waking at the end of a probation to confirm the level."""
        now = self.clock()
        due = now + self.config.check_interval + self.jitter() * self.config.check_jitter
        with agent_state.locked(self.config.state_dir):
            current = agent_state.read(self.config.state_dir)
        confirm = guard.confirm_at(current, self.kernel.boot_id(), self.config.crash_guard)
        if confirm is not None and now < confirm < due:
            if self._stop.wait(confirm - now + 1):
                return
            self._confirm()
            now = self.clock()
        self._stop.wait(max(0.0, due - now))

    def _confirm(self) -> None:
        with agent_state.locked(self.config.state_dir):
            current = agent_state.read(self.config.state_dir)
            a, boot = current.applied, self.kernel.boot_id()
            if a and guard.confirmable(current, boot, self.clock(), self.config.crash_guard):
                agent_state.write(
                    self.config.state_dir, replace(current, applied=replace(a, confirmed=True))
                )
                self.log(f"level {a.level} survived its probation: confirmed")

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _StopRequestedError

    def _mark_started(self) -> None:
        # A stop mark left by an earlier run of the daemon in this boot must
        # not vouch for a crash that comes later in it.
        self.config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with agent_state.locked(self.config.state_dir):
            current = agent_state.read(self.config.state_dir)
            if current.clean_shutdown_boot:
                agent_state.write(self.config.state_dir, replace(current, clean_shutdown_boot=""))

    def _mark_clean_stop(self) -> None:
        try:
            with agent_state.locked(self.config.state_dir):
                current = agent_state.read(self.config.state_dir)
                boot = self.kernel.boot_id()
                agent_state.write(self.config.state_dir, replace(current, clean_shutdown_boot=boot))
        except SutureError as e:
            self.log(f"could not record the clean stop: {e.message}")
