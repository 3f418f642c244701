"""Hold every thread of a process stopped under ptrace, and let them go again.

Threads are seized (``PTRACE_SEIZE``) and interrupted one by one, and the
thread list is read again until a pass finds no new one: a thread created
meanwhile by a thread not yet stopped is caught on the next pass.
"""

from __future__ import annotations

import errno
import time

from suture.errors import ProcessRefusedError, UserspaceError
from suture.userspace import procfs
from suture.userspace import ptrace as pt

_MAX_PASSES = 20


class StoppedProcess:
    """Every thread of ``pid`` in a ptrace stop, between :meth:`stop` and :meth:`release`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.tids: list[int] = []
        self._seized: set[int] = set()
        self.stopped_at = 0.0  # time.perf_counter() of the first interrupt
        self.paused = 0.0  # s, summed over stop/resume rounds

    def stop(self) -> None:
        """Seize (first time) and interrupt every thread; wait until each is stopped.

        Every thread of a pass is interrupted before any is waited for, so
        the threads stop together rather than one scheduling delay after another.

        Raises:
            ProcessRefusedError: the process vanished, or ptrace is not allowed.
            UserspaceError: threads kept appearing.
        """
        self.stopped_at = time.perf_counter()
        stopped: set[int] = set()
        for _ in range(_MAX_PASSES):
            new = [t for t in procfs.threads(self.pid) if t not in stopped]
            if not new:
                break
            asked = [t for t in new if self._interrupt(t)]
            stopped.update(t for t in asked if self._wait_interrupted(t))
        else:
            self.release()
            raise UserspaceError(f"process {self.pid} kept creating threads; not patched")
        if not stopped:
            raise ProcessRefusedError(f"process {self.pid} is gone", pid=self.pid, reason="gone")
        self.tids = sorted(stopped)

    def stop_one(self, tid: int) -> bool:
        """Seize and stop only ``tid`` (the others run on); False when it is gone.

        Raises:
            ProcessRefusedError: ptrace is not allowed.
        """
        self.stopped_at = time.perf_counter()
        if self._interrupt(tid) and self._wait_interrupted(tid):
            self.tids = [tid]
            return True
        return False

    def _interrupt(self, tid: int) -> bool:
        """Seize (first time) and interrupt one thread; False when it exited meanwhile."""
        try:
            if tid not in self._seized:
                pt.seize(tid)
                self._seized.add(tid)
            pt.interrupt(tid)
        except pt.PtraceError as e:
            if e.errno == errno.ESRCH:
                self._seized.discard(tid)
                return False
            raise ProcessRefusedError(
                f"cannot trace process {self.pid}: {e.strerror}",
                pid=self.pid,
                reason="permission",
                hint="run as root (CAP_SYS_PTRACE); see 'suture status' for the Yama scope",
            ) from e
        return True

    def _wait_interrupted(self, tid: int) -> bool:
        """Wait for an interrupted thread's stop; False when it exited instead."""
        while True:
            stop = pt.wait(tid)
            if stop is None or stop.exited:
                self._seized.discard(tid)
                return False
            if stop.is_interrupt:
                return True
            # A signal-delivery stop came first: deliver it, the interrupt stop follows.
            pt.cont(tid, stop.signal)

    def resume(self) -> None:
        """Let the threads run (still traced); :meth:`stop` stops them again."""
        self.paused += time.perf_counter() - self.stopped_at
        for tid in self.tids:
            try:
                pt.cont(tid)
            except pt.PtraceError:
                self._seized.discard(tid)
        self.tids = []

    def release(self) -> None:
        """Detach from every thread; each runs on from where it stopped."""
        held = bool(self.tids)
        for tid in sorted(self._seized):
            try:
                if tid not in self.tids:
                    # Running (after resume): it must be in a stop to be detached.
                    pt.interrupt(tid)
                    self._wait_stop(tid)
                pt.detach(tid)
            except pt.PtraceError:
                pass  # gone
        if held:  # the pause ends when the last thread is let go
            self.paused += time.perf_counter() - self.stopped_at
        self._seized.clear()
        self.tids = []

    @staticmethod
    def _wait_stop(tid: int) -> None:
        while True:
            stop = pt.wait(tid)
            if stop is None or stop.exited or stop.is_interrupt:
                return
            pt.cont(tid, stop.signal)
