#!/usr/bin/env bash
# Install what Suture needs on a Debian 12 machine: apt packages and a
# virtualenv in .venv with the project and its dev tools. Safe to run again.
# --test: also what only the tests need (scripts/test.sh passes it).
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TEST=0
[ "${1:-}" = "--test" ] && WITH_TEST=1

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || { echo "setup: run as root (apt-get needs it)" >&2; exit 1; }
	SUDO="sudo"
fi

# qemu + busybox + kmod: the lab guest; make/gcc/libelf: kbuild for modules;
# flex/bison/bc/dwarves/libssl-dev/patch/xz-utils: preparing distro source trees;
# cpio: unit tests read the lab's initramfs back; python3-venv: the virtualenv;
# stress-ng: the load `suture test` applies patches under, in the guest;
# mmdebstrap: build roots with other series' compilers and the Debian 13 guest
# root (made into the cache; nothing of them is installed into the host).
PACKAGES=(qemu-system-x86 busybox-static kmod cpio zstd make gcc libelf-dev python3-venv
	flex bison bc dwarves libssl-dev patch xz-utils stress-ng mmdebstrap)
# Tests only (the demo serves from SQLite): postgresql, for the server's
# PostgreSQL tests (scripts/postgres.sh starts a private cluster from it);
# chromium + chromium-driver, for the dashboard's browser test (Debian's
# driver matches Debian's browser; selenium would otherwise download one).
# systemd: systemd-analyze checks the units' sandbox (offline; nothing is started).
TEST_PACKAGES=(postgresql chromium chromium-driver systemd)

missing_of() {
	local p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"
	done
}
apt_install() {
	echo "setup: installing $*" >&2
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

echo "setup: refreshing apt's package lists (the lab resolves kernels from them)" >&2
$SUDO apt-get update -qq
mapfile -t missing < <(missing_of "${PACKAGES[@]}")
[ "${#missing[@]}" -eq 0 ] || apt_install "${missing[@]}"
if [ "$WITH_TEST" = 1 ]; then
	mapfile -t missing < <(missing_of "${TEST_PACKAGES[@]}")
	# Outside CI a machine without them still runs the rest (those tests skip);
	# CI must run every test, so there a failed install stops it.
	if [ "${#missing[@]}" -gt 0 ] && ! apt_install "${missing[@]}"; then
		[ -z "${CI:-}" ] || { echo "setup: cannot install ${missing[*]}" >&2; exit 1; }
		echo "setup: WARNING: ${missing[*]} not installed; the tests that need it will skip" >&2
	fi
fi

if [ ! -x .venv/bin/python ]; then
	python3 -m venv .venv
fi
# compat editable mode: a plain path entry, no import hook; Python in the
# guest runs under software emulation, where every import costs.
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' --config-settings editable_mode=compat
# Bytecode now, so the guest (which starts fresh every boot) need not compile.
.venv/bin/python -m compileall -q suture tests bench >/dev/null
