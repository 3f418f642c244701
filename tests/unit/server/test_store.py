"""suture.server.db: URL parsing, backend selection, the schema, check-in records and history."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest

from suture.contract import checkin
from suture.errors import CheckinError, DatabaseError, UsageError
from suture.server.db import SCHEMA_VERSION, DbUrl, default_url, open_store, pool
from suture.server.db import hosts as db_hosts
from suture.server.db.hosts import Allowance
from suture.server.db.schema import MIGRATIONS, statements
from tests.support.contract import ROW
from tests.support.server import CHECKIN

JAN_1 = 1767225600.0  # 2026-01-01T00:00:00Z
# Format 3: two library builds with userspace levels (stored by build id).
CHECKIN3 = {**CHECKIN, "format": 3, "userspace": [{**ROW, "build_id": "cd" * 20}, ROW]}


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
    monkeypatch.setattr(pool, "_PgPool", lambda dsn, size: seen.append(dsn) or 1 / 0)
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
    db_hosts.record(s, checkin.parse(CHECKIN), "10.0.0.1", JAN_1)
    s.close()
    s = open_store(url)  # a restart: no step runs twice
    assert db_hosts.get(s, CHECKIN["host_id"]) is not None
    s.close()
    rows = sqlite3.connect(url.target).execute("SELECT version FROM schema_version").fetchall()
    assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


def test_the_database_file_is_private(tmp_path: Path) -> None:
    # It was 0644: anyone on the host could read every host's report and the token hashes.
    path = tmp_path / "state" / "s.db"
    store = open_store(DbUrl("sqlite", str(path)))
    db_hosts.record(store, checkin.parse(CHECKIN), "10.0.0.1", JAN_1)
    store.close()
    for f in (path, path.with_name("s.db-wal"), path.with_name("s.db-shm")):
        if f.exists():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    path.chmod(0o644)  # one an older server made
    open_store(DbUrl("sqlite", str(path))).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_database_of_schema_3_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version, step in enumerate(MIGRATIONS[:3], start=1):
        for sql in statements(step, "sqlite"):
            conn.execute(sql)
        conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
    conn.execute(
        "INSERT INTO hosts (host_id, hostname, kernel_release, kernel_build_id, level, state,"
        " agent_version, patches, address, first_seen, last_seen)"
        " VALUES ('old', 'o', 'r', 'b', 0, 'unpatched', '0.1', '[]', 'a',"
        " '2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z')"
    )
    for at in ("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"):
        conn.execute(
            "INSERT INTO host_events (host_id, at, kernel_release, kernel_build_id, level,"
            " attempted_level, state) VALUES ('old', ?, 'r', 'b', 0, 0, 'unpatched')",
            (at,),
        )
    conn.commit()
    conn.close()
    store = open_store(DbUrl("sqlite", str(path)))
    try:
        found = db_hosts.get(store, "old")
        assert found is not None and found.build_since == JAN_1
        assert [e["seq"] for e in db_hosts.events(store, "old", None, 10)] == [2, 1]
    finally:
        store.close()


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


def test_record_keeps_first_seen_and_build_since(tmp_path: Path) -> None:
    s = open_store(DbUrl("sqlite", str(tmp_path / "s.db")))
    report = checkin.parse(CHECKIN)
    db_hosts.record(s, report, "10.0.0.1", JAN_1)
    db_hosts.record(s, report, "10.0.0.2", JAN_1 + 86400)
    host = db_hosts.get(s, report.host_id)
    assert host is not None
    assert host.first_seen == "2026-01-01T00:00:00Z"
    assert host.last_seen == "2026-01-02T00:00:00Z"
    assert host.address == "10.0.0.2"
    assert host.checkin == report
    assert host.build_since == JAN_1  # on this build since the first report
    other = checkin.parse({**CHECKIN, "kernel": {"release": "x", "build_id": "ab" * 10}})
    db_hosts.record(s, other, "10.0.0.2", JAN_1 + 2 * 86400)
    moved = db_hosts.get(s, report.host_id)
    assert moved is not None and moved.build_since == JAN_1 + 2 * 86400  # a new build: anew
    s.close()


def test_history_is_kept_bounded_per_host(tmp_path: Path) -> None:
    # One host token wrote 5,965 history rows in 10 s: the history grew without bound.
    s = open_store(DbUrl("sqlite", str(tmp_path / "s.db")))
    for n in range(60):
        flap = checkin.parse({**CHECKIN, "format": 2, "attempted_level": n % 2})
        db_hosts.record(s, flap, "10.0.0.1", JAN_1 + n, keep_events=10)
    events = db_hosts.events(s, CHECKIN["host_id"], None, 100)
    assert [e["seq"] for e in events] == list(range(60, 50, -1))
    assert db_hosts.prune_events(s, JAN_1 + 55) == 5  # and nothing older than the age limit
    s.close()


def test_a_host_that_checks_in_too_often_is_refused_until_it_may_again(tmp_path: Path) -> None:
    s = open_store(DbUrl("sqlite", str(tmp_path / "s.db")))
    report = checkin.parse(CHECKIN)
    allowance = Allowance(burst=3, per_s=0.5)
    taken = [db_hosts.record(s, report, "a", JAN_1, allowance=allowance) for _ in range(5)]
    assert [r.stored for r in taken] == [True, True, True, False, False]
    assert taken[-1].retry_after == pytest.approx(2.0)
    assert db_hosts.record(s, report, "a", JAN_1 + 2, allowance=allowance).stored
    s.close()


def test_checkin_parse() -> None:
    report = checkin.parse_json(json.dumps(CHECKIN).encode())
    assert report.patches == ("suture_fix_1",)
    assert report.last_error is None
    with pytest.raises(CheckinError, match="larger"):
        checkin.parse_json(b" " * (checkin.MAX_BODY + 1))


def test_userspace_rows_are_replaced_by_each_checkin(tmp_path: Path) -> None:
    s = open_store(DbUrl("sqlite", str(tmp_path / "s.db")))
    try:
        check_userspace_rows(s)
    finally:
        s.close()


def rows_of(s: pool.Store, host_id: str) -> tuple[checkin.Library, ...]:
    host = db_hosts.get(s, host_id)
    assert host is not None
    return host.checkin.userspace


def check_userspace_rows(s: pool.Store) -> None:
    three = checkin.parse(CHECKIN3)
    assert [u.build_id for u in three.userspace] == ["ab" * 20, "cd" * 20]
    db_hosts.record(s, three, "10.0.0.1", JAN_1)
    host = db_hosts.get(s, three.host_id)
    assert host is not None and host.checkin == three
    assert host.to_dict()["userspace"] == [u.to_document() for u in three.userspace]
    one = checkin.parse({**CHECKIN3, "userspace": [ROW]})
    db_hosts.record(s, one, "10.0.0.1", JAN_1 + 1)
    assert rows_of(s, three.host_id) == one.userspace
    db_hosts.record(s, checkin.parse(CHECKIN), "10.0.0.1", JAN_1 + 2)  # format 1: none left
    assert rows_of(s, three.host_id) == ()
    db_hosts.record(s, three, "10.0.0.1", JAN_1 + 3)
    assert db_hosts.delete(s, three.host_id)
    with s.read() as tx:
        assert tx.rows("SELECT COUNT(*) FROM host_libraries")[0][0] == 0


def test_postgresql_store(pg_url: str) -> None:
    url = DbUrl.parse(pg_url)
    s = open_store(url)  # a new, empty database: every migration step runs
    try:
        check_userspace_rows(s)
        report = checkin.parse(CHECKIN)
        db_hosts.record(s, report, "10.0.0.1", JAN_1)
        db_hosts.record(s, report, "10.0.0.2", JAN_1 + 86400)
        host = db_hosts.get(s, report.host_id)
        assert host is not None
        assert (host.checkin, host.first_seen, host.address, host.build_since) == (
            report,
            "2026-01-01T00:00:00Z",
            "10.0.0.2",
            JAN_1,
        )
        s.ping()
    finally:
        s.close()
    s = open_store(url)  # migrating again is a no-op and keeps the data
    try:
        assert db_hosts.get(s, CHECKIN["host_id"]) is not None
        with s.read() as tx:
            rows = tx.rows("SELECT version FROM schema_version ORDER BY version")
        assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
    finally:
        s.close()
