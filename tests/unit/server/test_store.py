"""suture.server.store and checkin: URL parsing, backend selection, SQLite schema and records."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from suture.errors import CheckinError, DatabaseError, UsageError
from suture.server import checkin, store
from suture.server.store import SCHEMA_VERSION, DbUrl, default_url, open_store
from tests.support.server import CHECKIN


def test_db_url_parsing() -> None:
    assert DbUrl.parse("sqlite:///var/lib/suture/s.db") == DbUrl("sqlite", "/var/lib/suture/s.db")
    assert DbUrl.parse("sqlite:rel/s.db") == DbUrl("sqlite", "rel/s.db")
    pg = "postgresql://suture:pw@db.example.net:5432/fleet"
    assert DbUrl.parse(pg) == DbUrl("postgresql", pg)
    assert DbUrl.parse("postgres://h/db").kind == "postgresql"
    assert "pw" not in str(DbUrl.parse(pg))
    assert str(DbUrl.parse("sqlite:///a/b.db")) == "sqlite:///a/b.db"
    for bad in ("mysql://h/db", "sqlite://", "sqlite:///", "/plain/path.db", ""):
        with pytest.raises(UsageError):
            DbUrl.parse(bad)


def test_default_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SUTURE_STATE_DIR", str(tmp_path))
    assert default_url() == DbUrl("sqlite", str(tmp_path / "server.db"))
    monkeypatch.delenv("SUTURE_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "x"))
    assert default_url() == DbUrl("sqlite", str(tmp_path / "x" / "suture" / "server.db"))


def test_postgresql_url_selects_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(store, "_connect_postgresql", lambda dsn: seen.append(dsn) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        open_store(DbUrl.parse("postgresql://h/db"))
    assert seen == ["postgresql://h/db"]


def test_postgresql_unreachable_is_a_database_error() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(DatabaseError):
        open_store(DbUrl.parse("postgresql:///nosuchdb?host=/nonexistent&connect_timeout=1"))


def test_sqlite_migrates_once_and_keeps_data(tmp_path: Path) -> None:
    url = DbUrl("sqlite", str(tmp_path / "deep" / "s.db"))
    s = open_store(url)
    assert s.version() == SCHEMA_VERSION
    s.record(checkin.parse(json.dumps(CHECKIN).encode()), "10.0.0.1")
    s.close()
    s = open_store(url)  # a restart: no step runs twice
    assert s.version() == SCHEMA_VERSION
    assert [h.checkin.host_id for h in s.hosts()] == [CHECKIN["host_id"]]
    s.close()
    rows = sqlite3.connect(url.target).execute("SELECT version FROM schema_version").fetchall()
    assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


def test_newer_schema_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    open_store(DbUrl("sqlite", str(path))).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    with pytest.raises(DatabaseError, match="schema version"):
        open_store(DbUrl("sqlite", str(path)))


def test_unopenable_sqlite_is_a_database_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(DatabaseError):
        open_store(DbUrl("sqlite", str(tmp_path / "file" / "s.db")))


def test_record_keeps_first_seen(tmp_path: Path) -> None:
    s = open_store(DbUrl("sqlite", str(tmp_path / "s.db")))
    report = checkin.parse(json.dumps(CHECKIN).encode())
    s.record(report, "10.0.0.1", datetime(2026, 1, 1, tzinfo=UTC))
    s.record(report, "10.0.0.2", datetime(2026, 1, 2, tzinfo=UTC))
    (host,) = s.hosts()
    assert host.first_seen == "2026-01-01T00:00:00Z"
    assert host.last_seen == "2026-01-02T00:00:00Z"
    assert host.address == "10.0.0.2"
    assert host.checkin == report
    s.close()


def test_checkin_parse() -> None:
    report = checkin.parse(json.dumps(CHECKIN).encode())
    assert report.patches == ("suture_fix_1",)
    assert report.last_error is None
    without_error = {k: v for k, v in CHECKIN.items() if k != "last_error"}
    assert checkin.parse(json.dumps(without_error).encode()) == report
    with pytest.raises(CheckinError, match="larger"):
        checkin.parse(b" " * (checkin.MAX_BODY + 1))
    with pytest.raises(CheckinError) as e:
        checkin.parse(json.dumps({**CHECKIN, "host_id": "abc\n"}).encode())
    assert e.value.field == "host_id"


def test_postgresql_store(pg_url: str) -> None:
    url = DbUrl.parse(pg_url)
    s = open_store(url)  # a new, empty database: every migration step runs
    try:
        assert s.version() == SCHEMA_VERSION
        report = checkin.parse(json.dumps(CHECKIN).encode())
        s.record(report, "10.0.0.1", datetime(2026, 1, 1, tzinfo=UTC))
        s.record(report, "10.0.0.2", datetime(2026, 1, 2, tzinfo=UTC))
        (host,) = s.hosts()
        assert (host.checkin, host.first_seen, host.address) == (
            report,
            "2026-01-01T00:00:00Z",
            "10.0.0.2",
        )
        s.ping()
    finally:
        s.close()
    s = open_store(url)  # migrating again is a no-op and keeps the data
    try:
        assert s.version() == SCHEMA_VERSION
        assert [h.checkin.host_id for h in s.hosts()] == [CHECKIN["host_id"]]
        rows = s._run("SELECT version FROM schema_version ORDER BY version")
        assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
    finally:
        s.close()
