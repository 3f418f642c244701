"""Cursors for paged lists: an opaque token that says where the next page starts.

A cursor names its list (so one list's cursor is refused by another) and the
last key of the page before (a host id, an event number). Pages are read by
key in the database (``host_id > ?``), never by offset.
"""

from __future__ import annotations

import base64
import binascii
import json

from suture.errors import UsageError

DEFAULT_LIMIT = 200  # rows in a page unless more are asked for
MAX_LIMIT = 5000


def encode(kind: str, after: str | int) -> str:
    """The cursor of the page after key ``after`` in list ``kind``."""
    raw = json.dumps([kind, after], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(kind: str, cursor: str) -> str | int:
    """The key a cursor of list ``kind`` starts after.

    Raises:
        UsageError: not a cursor of this list.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        found, after = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as e:
        raise UsageError("cursor is not one this server gave", hint="start without it") from e
    if found != kind or type(after) not in (str, int):
        raise UsageError(f"cursor is not one of the {kind} list", hint="start without it")
    value: str | int = after
    return value
