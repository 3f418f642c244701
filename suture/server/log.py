"""The server's log: levelled, one line per event, as text or JSON, with the request's id.

Every line carries the id of the request it belongs to (``X-Request-Id``,
from the client when it sent a sane one, else made here), so an operator can
follow one request from the access log into the errors it caused. Values from
requests (paths, host ids) are escaped: a control character never reaches
the terminal or the log file raw (ESC shows as the four characters of its escape).
"""

from __future__ import annotations

import contextvars
import json
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from suture import timefmt

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
FORMATS = ("text", "json")
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


def escape(text: str) -> str:
    """``text`` with control characters (and backslashes) written as escapes."""
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class ServerLog:
    """Where the server's events go.

    Args:
        sink: takes each finished line (stderr by default).
        fmt: ``text`` or ``json``.
        level: the lowest level written (``debug``, ``info``, ``warning``, ``error``).
        clock: unix time for the lines' time stamps.
    """

    def __init__(
        self,
        sink: Callable[[str], None] = _stderr,
        fmt: str = "text",
        level: str = "info",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sink = sink
        self._json = fmt == "json"
        self._level = LEVELS[level]
        self._clock = clock
        self._lock = threading.Lock()

    def enabled(self, level: str) -> bool:
        """True when lines of ``level`` are written."""
        return LEVELS[level] >= self._level

    def event(self, level: str, message: str, **fields: Any) -> None:
        """Write one line: ``message`` and its fields (values from requests are escaped)."""
        if LEVELS[level] < self._level:
            return
        rid = request_id.get()
        if self._json:
            when = timefmt.precise(self._clock())
            record = {"time": when, "level": level, "message": message, **fields}
            if rid:
                record["request_id"] = rid
            line = json.dumps(record, default=str)  # JSON escapes control characters itself
        else:
            parts = [f"suture-server: {level.upper()} {escape(message)}"]
            parts += [f"{k}={escape(str(v))}" for k, v in fields.items()]
            if rid:
                parts.append(f"rid={rid}")
            line = " ".join(parts)
        with self._lock:
            self._sink(line)

    def debug(self, message: str, **fields: Any) -> None:
        """A line at level debug."""
        self.event("debug", message, **fields)

    def info(self, message: str, **fields: Any) -> None:
        """A line at level info."""
        self.event("info", message, **fields)

    def warning(self, message: str, **fields: Any) -> None:
        """A line at level warning."""
        self.event("warning", message, **fields)

    def error(self, message: str, **fields: Any) -> None:
        """A line at level error."""
        self.event("error", message, **fields)

    def exception(self, message: str, **fields: Any) -> None:
        """A line at level error with the traceback of the exception being handled."""
        self.event("error", message, **fields, traceback=traceback.format_exc())
