"""How the CLI prints: human text on stderr/stdout, or one JSON document on stdout."""

from __future__ import annotations

import json
import sys
from typing import Any

from suture.errors import SutureError


class Output:
    """One command's output, human or JSON (``--json``)."""

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode

    def result(self, data: dict[str, Any], text: str) -> None:
        """The command's result: ``data`` as JSON, or ``text`` for people."""
        if self.json_mode:
            json.dump(data, sys.stdout, indent=2, sort_keys=True)
            sys.stdout.write("\n")
        elif text:
            print(text)

    def message(self, text: str) -> None:
        """Progress and notes: always on stderr, so stdout stays parseable."""
        print(f"suture: {text}", file=sys.stderr)

    def error(self, err: SutureError) -> None:
        """A failure: JSON on stdout in JSON mode, and always a line on stderr."""
        if self.json_mode:
            json.dump({"format": 1, "ok": False, **err.to_dict()}, sys.stdout, indent=2)
            sys.stdout.write("\n")
        print(f"suture: error: {err.message}", file=sys.stderr)
        tail = getattr(err, "console_tail", "")
        if tail:
            print("--- last lines of the guest console ---", file=sys.stderr)
            print(tail, file=sys.stderr)
        if err.hint:
            print(f"suture: what to do: {err.hint}", file=sys.stderr)
