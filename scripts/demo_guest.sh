#!/usr/bin/env bash
# Runs inside the lab guest (see demo.sh): serve the repository, update, show, remove.
set -euo pipefail
repo=$1
suture=".venv/bin/suture"
state=/tmp/suture-state
show() { printf '\n\033[1m-- %s\033[0m\n' "$*"; }

show "running kernel: $(uname -r); /proc/cmdline before:"
cat /proc/cmdline
show "suture serve --repo $repo (on 127.0.0.1:8470)"
$suture serve --repo "$repo" --db "sqlite:////tmp/server.db" --admin-token-file /tmp/admin.token &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:8470/healthz")' \
        2>/dev/null && break
    sleep 0.2
done
show "suture fleet key create: a registration key for this host to enrol with"
key=$($suture fleet key create --server http://127.0.0.1:8470 --admin-token-file /tmp/admin.token \
    --tag env:demo --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["registration_key"])')
echo "${key:0:12}..."
show "suture update: enrol, verify the signed metadata, download level 1, apply it"
$suture update --server http://127.0.0.1:8470 --trusted-root "$repo/metadata/1.root.json" \
    --state-dir "$state" --registration-key "$key"
show "/proc/cmdline now (the new code runs, no reboot):"
cat /proc/cmdline
show "suture status"
$suture status --state-dir "$state"
show "suture uname -r"
$suture uname -r --state-dir "$state"
show "what the fleet server saw (GET /api/v1/hosts, admin token)"
python3 -c 'import json, urllib.request
request = urllib.request.Request("http://127.0.0.1:8470/api/v1/hosts")
request.add_header("Authorization", "Bearer " + open("/tmp/admin.token").read().strip())
for h in json.load(urllib.request.urlopen(request))["hosts"]:
    print(h["hostname"], h["kernel"]["release"], "level", h["level"], h["state"], h["tags"], h["functions"])'
show "suture unload --all"
$suture unload --all
show "/proc/cmdline restored:"
cat /proc/cmdline
