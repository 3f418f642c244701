"""The one timestamp format of Suture: RFC 3339 in UTC to the second, ``2026-12-03T10:00:00Z``.

Every file, JSON document, report and line for people writes times this way;
:func:`parse` also reads the ``+00:00`` form that agent state files of earlier
versions hold, so nothing written before needs rewriting.
"""

from __future__ import annotations

from datetime import UTC, datetime

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc(when: float | datetime | None = None) -> str:
    """``when`` (unix time in s, an aware datetime, or now) as ``YYYY-MM-DDTHH:MM:SSZ``."""
    if when is None:
        moment = datetime.now(UTC)
    elif isinstance(when, datetime):
        moment = when.astimezone(UTC)
    else:
        moment = datetime.fromtimestamp(when, UTC)
    return moment.strftime(FORMAT)


def precise(when: float) -> str:
    """Unix time ``when`` (s) to the millisecond, ``YYYY-MM-DDTHH:MM:SS.mmmZ``: log lines' time."""
    return (
        datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def parse(text: str) -> float:
    """Unix time (s) of a timestamp in this format, or of any ISO 8601 time with a zone.

    Raises:
        ValueError: not a time, or a time without a zone (which would be read as local).
    """
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return moment.timestamp()
