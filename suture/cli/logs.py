"""Where the CLI's log goes: levelled lines on stderr, journald-friendly under systemd.

Library code logs through :mod:`logging` (``suture.*`` loggers); the CLI
decides what shows: warnings and errors always (``--quiet`` shows only
those), progress at the default level, details with ``--verbose``.

On a terminal or in a pipe a line reads ``suture: text`` (``suture: warning:
text`` for a warning). When stderr is the journal (systemd sets
``$JOURNAL_STREAM`` to its device and inode), each line starts with its
syslog priority instead (``<4>text``): journald files it at that level, and
the unit's name already says who wrote it.
"""

from __future__ import annotations

import logging
import os
import sys

LOGGER = "suture"
# logging level -> syslog priority (sd-daemon(3)): err, warning, info, debug
_PRIORITY = {logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def to_journal(stream: object = None) -> bool:
    """True when ``stream`` (default stderr) is connected to systemd's journal."""
    stream = sys.stderr if stream is None else stream
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())  # type: ignore[union-attr]
    except (OSError, AttributeError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


class _Plain(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if getattr(record, "hint", False):
            return f"suture: what to do: {text}"
        if record.levelno >= logging.ERROR:
            return f"suture: error: {text}"
        if record.levelno >= logging.WARNING:
            return f"suture: warning: {text}"
        return f"suture: {text}"


class _Journal(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = next(p for level, p in sorted(_PRIORITY.items(), reverse=True)
                        if record.levelno >= level or level == logging.DEBUG)  # fmt: skip
        # One record, one journal entry: a traceback's lines stay in it.
        return f"<{priority}>" + super().format(record).replace("\n", "\n ")


def setup(verbosity: int, stream: object = None) -> None:
    """Send the ``suture`` loggers to ``stream`` (default stderr) at a level.

    Args:
        verbosity: -1 ``--quiet`` (warnings and errors), 0 the default
            (progress too), 1 ``--verbose`` (details, and tracebacks).
        stream: where lines go.
    """
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)  # type: ignore[arg-type]
    handler.setFormatter(_Journal() if to_journal(handler.stream) else _Plain())
    root = logging.getLogger(LOGGER)
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
