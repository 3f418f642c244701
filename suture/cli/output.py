"""How the CLI prints: the result on stdout (human text, or one JSON document), the rest logged.

Progress, warnings and errors go through :mod:`logging` to stderr
(:mod:`suture.cli.logs`), so stdout holds the result only and ``--json``
output always parses.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from suture.errors import SutureError

log = logging.getLogger("suture.cli")


class Output:
    """One command's output, human or JSON (``--json``)."""

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode

    def result(self, data: dict[str, Any], text: str) -> None:
        """The command's result: ``data`` as JSON, or ``text`` for people."""
        if self.json_mode:
            self.document(data)
        elif text:
            print(text, flush=True)

    def document(self, data: dict[str, Any]) -> None:
        """One JSON document on stdout."""
        json.dump(data, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
        sys.stdout.flush()

    def message(self, text: str) -> None:
        """Progress and notes (shown unless ``--quiet``)."""
        log.info("%s", text)

    def warning(self, text: str) -> None:
        """Something the operator should read; the command goes on."""
        log.warning("%s", text)

    def error(self, err: SutureError) -> None:
        """A failure: JSON on stdout in JSON mode, and always the message and hint logged."""
        if self.json_mode:
            self.document({"format": 1, "ok": False, **err.to_dict()})
        log.error("%s", err.message)
        tail = getattr(err, "console_tail", "")
        if tail:
            log.error("--- last lines of the guest console ---\n%s", tail)
        if err.hint:
            log.error("%s", err.hint, extra={"hint": True})
