"""Patch processes that start after a userspace patch was applied.

A process that execs maps its libraries afresh from disk: it runs the old
code until it is patched too. (A fork without exec inherits its parent's
memory, patched or not, and needs nothing.) Two ways to find them:

- :class:`ExecEvents`: the kernel's proc connector (``NETLINK_CONNECTOR``,
  ``CN_IDX_PROC``; ``<linux/cn_proc.h>``) reports every ``exec`` as it
  happens. It needs CAP_NET_ADMIN and ``CONFIG_PROC_EVENTS`` (Debian's
  kernels have it), and it sees every PID namespace below the listener's.
- :meth:`Reapplier.scan`: every process of ``/proc``, for hosts where the
  connector cannot be opened, and once per agent cycle in any case (an
  event can be lost when the socket's buffer overflows).

An exec event comes before the dynamic loader has mapped the libraries, so
a new process is looked at a few milliseconds later, and again with a
growing delay until it maps the library or :data:`GIVE_UP_AFTER` passes.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from suture.errors import UserspaceError
from suture.userspace import patcher, procfs
from suture.userspace.patch import UserPatch

NETLINK_CONNECTOR = 11
CN_IDX_PROC, CN_VAL_PROC = 1, 1
PROC_CN_MCAST_LISTEN = 1
PROC_EVENT_EXEC = 0x2
_NLMSG_DONE = 3
_NLMSG = struct.Struct("=IHHII")  # struct nlmsghdr
_CN_MSG = struct.Struct("=IIIIHH")  # struct cn_msg: id.idx, id.val, seq, ack, len, flags
_EVENT = struct.Struct("=IIQ")  # struct proc_event: what, cpu, timestamp_ns
_EXEC = struct.Struct("=ii")  # exec_proc_event: process_pid, process_tgid

FIRST_LOOK = 0.002  # s after the exec: the loader has usually mapped libc by then
GIVE_UP_AFTER = 2.0  # s: a process that maps none of the libraries by then never will


class ExecEvents:
    """The proc connector's exec events, as a socket to poll.

    Raises:
        UserspaceError: the connector cannot be used here (not root, no
            ``CONFIG_PROC_EVENTS``); fall back to :meth:`Reapplier.scan`.
    """

    def __init__(self) -> None:
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        except OSError as e:
            raise UserspaceError(f"the proc connector cannot be opened: {e.strerror}") from e
        try:
            self.sock.bind((0, CN_IDX_PROC))
            op = struct.pack("=I", PROC_CN_MCAST_LISTEN)
            cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(op), 0) + op
            self.sock.send(_NLMSG.pack(_NLMSG.size + len(cn), _NLMSG_DONE, 0, 0, 0) + cn)
        except OSError as e:
            self.sock.close()
            raise UserspaceError(
                f"the proc connector refused to report process starts: {e.strerror}",
                hint="run as root; the agent scans /proc each cycle instead",
            ) from e

    def fileno(self) -> int:
        """The socket, for select/poll."""
        return self.sock.fileno()

    def read(self, timeout: float) -> list[int]:
        """The processes (thread group ids) that exec'd, waiting up to ``timeout`` s for one."""
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0.0))
        if not ready:
            return []
        started = []
        while True:
            try:
                data = self.sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError:  # ENOBUFS: events were lost; the next scan finds those processes
                break
            started += parse_exec_events(data)
        return started

    def close(self) -> None:
        """Stop listening."""
        self.sock.close()


def parse_exec_events(data: bytes) -> list[int]:
    """The thread group ids of the exec events in one netlink datagram."""
    out = []
    at = 0
    while at + _NLMSG.size <= len(data):
        length = _NLMSG.unpack_from(data, at)[0]
        if length < _NLMSG.size:
            break
        body = at + _NLMSG.size + _CN_MSG.size
        if body + _EVENT.size + _EXEC.size <= at + length:
            what = _EVENT.unpack_from(data, body)[0]
            if what == PROC_EVENT_EXEC:
                _pid, tgid = _EXEC.unpack_from(data, body + _EVENT.size)
                out.append(tgid)
        at += (length + 3) & ~3
    return out


@dataclass(order=True)
class _Due:
    at: float  # time.monotonic() of the next look
    pid: int = field(compare=False)
    first: float = field(compare=False)  # when it was first seen
    wait: float = field(compare=False)


@dataclass
class Reapplier:
    """Applies the live userspace patches to processes that do not have them yet.

    ``patches`` are the newest level of each library build (what the agent
    applied); ``report`` is called with each process's outcome and how long
    after its start (exec event, or the scan) it was patched.
    """

    patches: list[UserPatch]
    policy: patcher.Policy = field(default_factory=patcher.Policy)
    select: Callable[[int], bool] = lambda _pid: True  # which processes are ours to patch
    lock: contextlib.AbstractContextManager[Any] = field(default_factory=contextlib.nullcontext)
    report: Callable[[patcher.Outcome, float], None] = lambda _o, _s: None
    shared: patcher.Shared = field(default_factory=patcher.Shared)
    _queue: list[_Due] = field(default_factory=list)

    def started(self, pids: Iterable[int], now: float | None = None) -> None:
        """Processes that just exec'd: looked at shortly."""
        now = time.monotonic() if now is None else now
        for pid in pids:
            if not self.select(pid):
                continue
            heapq.heappush(self._queue, _Due(now + FIRST_LOOK, pid, now, FIRST_LOOK))

    def next_due(self) -> float | None:
        """When the next queued look is due (time.monotonic()), or None."""
        return self._queue[0].at if self._queue else None

    def run_due(self, now: float | None = None) -> list[patcher.Outcome]:
        """Look at every process whose time has come; patch those that map a library."""
        now = time.monotonic() if now is None else now
        done = []
        while self._queue and self._queue[0].at <= now:
            due = heapq.heappop(self._queue)
            patch = self._mapped(due.pid)
            if patch is None:
                alive = (procfs.PROC / str(due.pid)).exists()
                if alive and now - due.first < GIVE_UP_AFTER:
                    wait = due.wait * 2
                    heapq.heappush(self._queue, _Due(now + wait, due.pid, due.first, wait))
                continue
            outcome = self._apply(patch, due.pid)
            self.report(outcome, time.monotonic() - due.first)
            done.append(outcome)
        return done

    def scan(self) -> list[patcher.Outcome]:
        """Every process of the host that maps a library build and lacks its patch."""
        done = []
        me = os.getpid()
        for pid in procfs.pids():
            if pid == me or not self.select(pid):
                continue
            patch = self._mapped(pid)
            if patch is not None:
                started = time.monotonic()
                outcome = self._apply(patch, pid)
                if outcome.result != "already":
                    self.report(outcome, time.monotonic() - started)
                    done.append(outcome)
        return done

    def _mapped(self, pid: int) -> UserPatch | None:
        """The patch for a library build ``pid`` maps, or None."""
        wanted = {p.build_id: p for p in self.patches}
        for lib in procfs.libraries(pid, self.shared.build_ids):
            if lib.build_id in wanted:
                return wanted[lib.build_id]
        return None

    def _apply(self, patch: UserPatch, pid: int) -> patcher.Outcome:
        from suture.userspace import fleet  # noqa: PLC0415 - fleet imports this module's peers

        with self.lock:  # the agent's cycle may be patching too
            return fleet.guarded(
                pid, lambda: patcher.apply_in_process(patch, pid, self.policy, self.shared)
            )


def watch(
    reapplier: Reapplier,
    until: Callable[[], bool],
    *,
    events: ExecEvents | None = None,
    scan_every: float = 300.0,
) -> None:
    """Patch new processes until ``until()`` is true (checked at least every 0.5 s).

    With ``events`` (the proc connector) each exec is handled as it comes;
    without, ``/proc`` is scanned every ``scan_every`` s (and with them too,
    for lost events).
    """
    next_scan = time.monotonic()
    while not until():
        now = time.monotonic()
        if now >= next_scan:
            with contextlib.suppress(OSError, UserspaceError):
                reapplier.scan()
            next_scan = now + scan_every
        due = reapplier.next_due()
        timeout = min(0.5, next_scan - now, *(() if due is None else (due - now,)))
        if events is not None:
            reapplier.started(events.read(timeout))
        else:
            time.sleep(max(timeout, 0.0))
        reapplier.run_due()
