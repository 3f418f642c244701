"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

# The PostgreSQL server the tests may use; scripts/test.sh starts a private one
# and sets this. Its role needs CREATEDB: each test gets a database of its own.
PG_SERVER_ENV = "SUTURE_TEST_POSTGRES_URL"
# The guest tests' kernel build when --release names none: resolved when the
# fixture is first used (tests/builds.py), never at collection.
CURRENT = "current"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--release",
        action="append",
        default=[],
        metavar="RELEASE",
        help="a kernel build the guest tests run on (repeatable: each test runs on each); "
        "default: $SUTURE_TEST_BUILD_KERNEL, else the distribution's current build",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Guest tests take their build as the parameter ``kernel_release``."""
    if "kernel_release" in metafunc.fixturenames:
        given = metafunc.config.getoption("release") or [CURRENT]
        metafunc.parametrize("kernel_release", given, indirect=True, scope="session")


@pytest.fixture(scope="session")
def kernel_release(request: pytest.FixtureRequest) -> str:
    """The kernel build a guest test runs on (``--release``, or the current one)."""
    given: str = request.param
    if given != CURRENT:
        return given
    from tests.builds import build_release  # noqa: PLC0415 - asks apt: only when used

    return build_release()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The ``postgresql://`` URL of a new, empty database, dropped after the test.

    Without a server the test skips, but under CI (which must run it) it fails.
    """
    server = os.environ.get(PG_SERVER_ENV)
    if not server:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_SERVER_ENV} is not set: CI must run the PostgreSQL tests")
        pytest.skip(f"no PostgreSQL server: set {PG_SERVER_ENV} (scripts/test.sh starts one)")
    # Here, not at the top: the guest's pytest loads this file too, and every
    # import costs there (software emulation).
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    name = f"suture_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server, autocommit=True, connect_timeout=10) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        # Same server, role and options (a ?host=/socket query too); another
        # path. Not urlunsplit: it drops the "//" of an empty host.
        u = urlsplit(server)
        yield f"{u.scheme}://{u.netloc}/{name}" + (f"?{u.query}" if u.query else "")
    finally:
        with psycopg.connect(server, autocommit=True, connect_timeout=10) as admin:
            # FORCE: a connection the test left open must not keep it alive.
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
