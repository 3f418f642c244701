#!/usr/bin/env bash
# The whole test suite: linters, type checks, unit tests, and the tests that
# boot the real Debian kernel in QEMU. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONDONTWRITEBYTECODE=1

echo "== ruff" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy (strict, package)" >&2
.venv/bin/mypy
echo "== pytest (unit and guest)" >&2
exec .venv/bin/python -m pytest -ra "$@"
