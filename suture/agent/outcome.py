"""What the agent found or did, and the one table from that to an exit code.

``suture update``, ``info``, ``status`` and ``boot`` all end with one of these
words (``status`` with the word of the agent's last cycle), and all exit by
:func:`exit_code`. An error ends a command with the error's own code instead
(see :mod:`suture.errors`); only ``status`` reports an earlier cycle's error,
as ``error``.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """What an update cycle (``update``, ``info``, the daemon) found or did."""

    UP_TO_DATE = "up-to-date"  # the newest level allowed is live
    APPLIED = "applied"  # another level was applied (newer, or older after an unroll or a yank)
    REMOVED = "removed"  # the live level was withdrawn and no level is left to go to
    PENDING = "pending"  # another level is offered, not applied (check, or update delay)
    NO_PATCHES = "no-patches"  # the repository has no level for this build and channel
    UNSUPPORTED = "unsupported"  # no livepatch core, or no build id: nothing can be applied
    HELD = "held"  # the newest level crashed this host before; the crash guard holds it


class BootOutcome(StrEnum):
    """What ``suture boot`` found or did."""

    REAPPLIED = "reapplied"  # the cached level is live again
    LIVE = "live"  # it already was (the agent ran earlier in this boot)
    NOTHING = "nothing"  # no level was applied before
    OTHER_KERNEL = "other-kernel"  # the level was for another build (a new kernel was booted)
    WITHDRAWN = "withdrawn"  # the level was yanked from the repository: never applied again
    HELD = "held"  # the previous boot ended during its probation: not re-applied
    UNSUPPORTED = "unsupported"  # no livepatch core or no build id


ERROR = "error"  # the word the state keeps when a cycle failed (``suture status`` shows it)

# outcome -> exit code; README's table of exit codes says the same.
EXIT_CODES: dict[str, int] = {
    Outcome.UP_TO_DATE: 0,
    Outcome.APPLIED: 0,
    Outcome.REMOVED: 0,
    Outcome.NO_PATCHES: 1,
    Outcome.PENDING: 2,
    Outcome.UNSUPPORTED: 3,
    Outcome.HELD: 4,
    BootOutcome.REAPPLIED: 0,
    BootOutcome.LIVE: 0,
    BootOutcome.NOTHING: 0,
    BootOutcome.OTHER_KERNEL: 0,
    BootOutcome.WITHDRAWN: 0,
    ERROR: 4,
}


def exit_code(outcome: str) -> int:
    """The exit code of a command that ends with ``outcome`` (an unknown word: 10)."""
    return EXIT_CODES.get(str(outcome), 10)
