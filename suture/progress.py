"""Progress of long steps: bytes and percent for transfers, a heartbeat for the rest.

Nothing an operator waits for stays silent for more than a couple of
seconds: a transfer reports what it has of what it expects
(:class:`Transfer`), and a step that gives no measure of its own (a
``make``, an unpacking) reports that it is still running and for how long
(:func:`heartbeat`). Both log at INFO through :mod:`logging`, so ``--quiet``
hides them and the journal gets them at their level.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

log = logging.getLogger("suture.progress")

EVERY = 2.0  # s between two lines about the same step


def human(size: float) -> str:
    """``12.3 MiB``: sizes in powers of 1024, as the cache's are."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover - the loop returns


class Transfer:
    """A transfer of ``total`` bytes (0: unknown) that reports itself at most every ``every`` s."""

    def __init__(
        self,
        what: str,
        total: int = 0,
        *,
        every: float = EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.total = total
        self.every = every
        self.clock = clock
        self._last = clock()

    def line(self, done: int) -> str:
        """``what: 12.3 MiB of 40.0 MiB (30%)``."""
        if self.total:
            share = min(100, 100 * done // self.total)
            return f"{self.what}: {human(done)} of {human(self.total)} ({share}%)"
        return f"{self.what}: {human(done)}"

    def update(self, done: int) -> None:
        """Report ``done`` bytes if the last report is ``every`` s old."""
        now = self.clock()
        if now - self._last >= self.every:
            self._last = now
            log.info("%s", self.line(done))


@contextlib.contextmanager
def heartbeat(
    what: str, *, every: float = EVERY, measure: Callable[[], str] | None = None
) -> Iterator[None]:
    """Log ``what: still running (N s)`` every ``every`` s while the block runs.

    ``measure``, when given, adds what can be said of the progress (a size,
    a count) to each line.
    """
    done = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while not done.wait(every):
            extra = ""
            if measure is not None:
                with contextlib.suppress(Exception):  # a view only: never fails the step
                    extra = f", {measure()}"
            log.info("%s: still running (%.0f s%s)", what, time.monotonic() - started, extra)

    thread = threading.Thread(target=beat, name=f"progress: {what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
