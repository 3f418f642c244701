#!/usr/bin/env bash
# The demo, the whole pipeline: build a live patch from a source fix for the
# current Debian 12 kernel build, test it in a guest of that build under load
# (about 40 s), sign it into a repository, then boot that kernel under QEMU
# and, inside it, serve the repository and let the agent update the running
# kernel; /proc/cmdline changes with no reboot.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONDONTWRITEBYTECODE=1
suture=.venv/bin/suture

step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

step "fetch the kernel build to patch (default: the current Debian 12 kernel)"
release=${SUTURE_DEMO_KERNEL:-$($suture --json lab fetch | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["release"])')}
$suture lab fetch --kernel "$release" >/dev/null

work=$(mktemp -d /tmp/suture-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

step "build examples/proc-cmdline.patch for $release (Debian's exact source, compiled once, cached)"
$suture build examples/proc-cmdline.patch --kernel "$release" -o "$work" \
    --name suture_demo --cve CVE-2026-00000 --description "demo: mark /proc/cmdline" --level 1

step "test it in a guest of $release under load: examples/proc-cmdline.test.sh must fail, pass, fail"
$suture test "$work/suture_demo.bundle" --test examples/proc-cmdline.test.sh

step "sign it into a new TUF repository as level 1 of that kernel build (publish checks the test)"
$suture repo init "$work/repo"
$suture publish "$work/suture_demo.bundle" --repo "$work/repo"

step "boot $release under QEMU: serve the repository on the guest's loopback, run the agent"
$suture lab run --kernel "$release" --timeout 600 -- bash scripts/demo_guest.sh "$work/repo"
