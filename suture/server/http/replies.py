"""What handlers answer (:class:`Reply`), and how errors become answers.

Every error answer is JSON ``{"format": 1, "ok": false, "error", "message"}``
(and ``field`` when one field was refused). ``error`` is the reason code of a
:class:`~suture.errors.RefusedError` (``unauthorized``, ``taken``...), or the
error's class name for a refused body (``CheckinError``, ``UsageError``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from suture.errors import (
    DatabaseError,
    FormatError,
    RateLimitedError,
    RefusedError,
    SutureError,
    UsageError,
)

# A refusal's reason -> the HTTP status it answers with.
STATUS_OF_REASON: dict[str, int] = {
    "unauthorized": 401,
    "forbidden": 403,
    "no_admin_token": 403,
    "bad_key": 403,
    "key_expired": 403,
    "key_full": 403,
    "blocked": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "taken": 409,
    "too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "no_signing_key": 503,
}


@dataclass
class Reply:
    """A handler's answer: JSON ``data``, a ``body`` of ``media_type``, or a ``file``."""

    data: Any = None
    status: int = HTTPStatus.OK
    body: bytes = b""
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None

    def encoded(self) -> bytes:
        """The bytes of the body (not for files)."""
        if self.data is not None:
            return json.dumps(self.data, sort_keys=True).encode() + b"\n"
        return self.body


def error(status: int, kind: str, message: str, **extra: str) -> Reply:
    """A JSON error answer."""
    data = {**extra, "format": 1, "ok": False, "error": kind, "message": message}
    return Reply(data, status=status)


def refused(e: RefusedError) -> Reply:
    """The answer to a refusal."""
    reply = error(STATUS_OF_REASON.get(e.reason, 403), e.reason, e.message)
    if isinstance(e, RateLimitedError):
        reply.headers["Retry-After"] = str(max(1, int(e.retry_after + 0.999)))
    return reply


def from_error(e: SutureError, refused_as: str = "UsageError") -> Reply:
    """The answer to a Suture error raised while serving a request (a 500 is logged by the caller).

    Args:
        e: the error.
        refused_as: the error name of a refused body or query (``CheckinError`` on check-ins).
    """
    if isinstance(e, RefusedError):
        return refused(e)
    if isinstance(e, FormatError):
        extra = {"field": e.field} if e.field else {}
        name = type(e).__name__ if type(e) is not FormatError else refused_as
        return error(HTTPStatus.BAD_REQUEST, name, e.message, **extra)
    if isinstance(e, UsageError):
        return error(HTTPStatus.BAD_REQUEST, type(e).__name__, e.message)
    if isinstance(e, DatabaseError):
        return error(HTTPStatus.SERVICE_UNAVAILABLE, "database", e.message)
    return error(HTTPStatus.INTERNAL_SERVER_ERROR, type(e).__name__, e.message)
