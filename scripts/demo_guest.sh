#!/usr/bin/env bash
# Runs inside the lab guest (see demo.sh): apply, show, remove.
set -euo pipefail
ko=$1
suture=".venv/bin/suture"
show() { printf '\n\033[1m-- %s\033[0m\n' "$*"; }

show "running kernel: $(uname -r); /proc/cmdline before:"
cat /proc/cmdline
show "suture apply $(basename "$ko")"
$suture apply "$ko"
show "/proc/cmdline now (the new code runs, no reboot):"
cat /proc/cmdline
show "suture status"
$suture status
show "suture unload suture_demo"
$suture unload suture_demo
show "/proc/cmdline restored:"
cat /proc/cmdline
