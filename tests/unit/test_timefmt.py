"""suture.timefmt: one format for every timestamp, and older state files still read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from suture import timefmt


def test_one_format_from_unix_time_datetimes_and_now() -> None:
    assert timefmt.utc(0) == "1970-01-01T00:00:00Z"
    assert timefmt.utc(1_764_756_000.9) == "2025-12-03T10:00:00Z"  # to the second
    cet = timezone(timedelta(hours=1))
    assert timefmt.utc(datetime(2026, 12, 3, 11, 0, tzinfo=cet)) == "2026-12-03T10:00:00Z"
    assert timefmt.utc().endswith("Z")


def test_parse_reads_this_format_and_the_older_offset_form() -> None:
    assert (
        timefmt.parse("2026-12-03T10:00:00Z") == datetime(2026, 12, 3, 10, tzinfo=UTC).timestamp()
    )
    assert (
        timefmt.parse("2026-12-03T10:00:00.500000+00:00")
        == timefmt.parse("2026-12-03T10:00:00Z") + 0.5
    )
    with pytest.raises(ValueError, match="no time zone"):
        timefmt.parse("2026-12-03T10:00:00")
    with pytest.raises(ValueError):
        timefmt.parse("yesterday")


def test_no_other_module_formats_times() -> None:
    from pathlib import Path  # noqa: PLC0415

    package = Path(timefmt.__file__).parent
    offenders = [
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if p.name != "timefmt.py"
        # Python's calls (SQL's strftime() in a migration is the database's business).
        and any(word in p.read_text() for word in (".strftime(", ".isoformat(", "fromisoformat("))
    ]
    assert not offenders, offenders


def test_log_lines_carry_milliseconds_in_utc() -> None:
    assert timefmt.precise(1_795_000_000.1234) == "2026-11-18T11:06:40.123Z"
    assert timefmt.parse(timefmt.precise(1_795_000_000.5)) == 1_795_000_000.5
