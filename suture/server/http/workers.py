"""Several server processes on one socket: fork them, keep them running, stop them together.

The parent binds the socket and brings the database schema up to date, then
forks ``workers`` children before it starts any thread. Each child opens
its own connection pool and serves the shared socket (the kernel hands each
new connection to one of them). No state lives in one process only: hosts,
sessions, rate limits, rollout decisions and metrics are in the database.

SIGTERM or SIGINT to the parent stops every child (requests under way
finish) and then the parent. A child that dies is started again, unless
children keep dying (:data:`MAX_RESTARTS` in a minute), which stops all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from types import FrameType

from suture.server.log import ServerLog

MAX_RESTARTS = 5  # in RESTART_WINDOW seconds
RESTART_WINDOW = 60.0
STOP_TIMEOUT = 30.0  # s children get to finish before SIGKILL


def supervise(count: int, child: Callable[[int], int], log: ServerLog) -> int:
    """Run ``child(n)`` in ``count`` forked processes until a signal; the exit status."""
    children: dict[int, int] = {}  # pid -> worker number
    stopping = False
    restarts: list[float] = []

    def spawn(n: int) -> None:
        pid = os.fork()
        if pid == 0:  # the child: its own signal handling, its own exit
            for s in (signal.SIGTERM, signal.SIGINT):
                signal.signal(s, signal.SIG_DFL)
            code = 1
            try:
                code = child(n)
            finally:
                os._exit(code)
        children[pid] = n

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            _kill(pid, signal.SIGTERM)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        for n in range(count):
            spawn(n)
        while children:
            try:
                pid, waited = os.wait()
            except ChildProcessError:
                break
            n = children.pop(pid, -1)
            if stopping or n < 0:
                continue
            log.error("a worker process died; starting it again", worker=n, status=waited)
            now = time.monotonic()
            restarts = [t for t in restarts if t > now - RESTART_WINDOW] + [now]
            if len(restarts) > MAX_RESTARTS:
                log.error("workers keep dying: stopping the server")
                status = 80
                on_signal(signal.SIGTERM, None)
                continue
            time.sleep(1.0)
            spawn(n)
    finally:
        _reap(children)
        for s, handler in old.items():
            signal.signal(s, handler)
    return status


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap(children: dict[int, int]) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT
    while children and time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            children.pop(pid, None)
        else:
            time.sleep(0.05)
    for pid in children:
        _kill(pid, signal.SIGKILL)
