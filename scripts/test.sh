#!/usr/bin/env bash
# The whole test suite: linters, type checks, unit tests, and the tests that
# boot the real Debian kernel in QEMU. Installs what it needs first.
# Arguments go to pytest (e.g. `bash scripts/test.sh tests/unit`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export PYTHONDONTWRITEBYTECODE=1

echo "== ruff" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy (strict, package)" >&2
.venv/bin/mypy

# The server's PostgreSQL tests need a server: the caller's, if it gives a
# SUTURE_TEST_POSTGRES_URL, else a private one for this run, stopped and
# removed on any exit. Under CI one that cannot start fails the run.
if [ -z "${SUTURE_TEST_POSTGRES_URL:-}" ]; then
	# In /tmp, not $TMPDIR: the postgres user must reach it, and the socket
	# path in it must stay short (108 bytes at most).
	pgdir=$(mktemp -d /tmp/suture-pg.XXXXXX)
	trap 'bash scripts/postgres.sh stop "$pgdir"' EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	echo "== postgresql (private server in $pgdir)" >&2
	if url=$(bash scripts/postgres.sh start "$pgdir"); then
		export SUTURE_TEST_POSTGRES_URL=$url
	elif [ -n "${CI:-}" ]; then
		echo "test: the PostgreSQL server did not start; CI must run its tests" >&2
		exit 1
	else
		echo "test: WARNING: no PostgreSQL server; its tests will skip" >&2
	fi
fi

echo "== pytest (unit and guest)" >&2
# Not exec: the trap above must run after pytest.
.venv/bin/python -m pytest -ra --durations=30 "$@"
