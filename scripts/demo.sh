#!/usr/bin/env bash
# The demo: fetch the current Debian 12 kernel, boot it in QEMU, and live-patch
# /proc/cmdline with `suture apply`, then take the patch out again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONDONTWRITEBYTECODE=1

step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

step "fetch the current Debian 12 kernel (image + headers) into the cache"
.venv/bin/suture lab fetch

step "build the example live patch (replaces cmdline_proc_show) against its headers"
work=$(mktemp -d /tmp/suture-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
.venv/bin/python - "$work" <<'PY'
import sys
from pathlib import Path
from suture.build.kbuild import build_module
from suture.lab import kernels
tree = kernels.fetch(None)
src = Path("tests/fixtures/modules/cmdline_patch.c")
ko = build_module(tree.headers_dir, src, "suture_demo", Path(sys.argv[1]), "-DLEVEL=1")
print(f"built {ko}", file=sys.stderr)
PY

step "boot it under QEMU and patch the running kernel"
.venv/bin/suture lab run -- bash scripts/demo_guest.sh "$work/suture_demo.ko"
