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
# driver matches Debian's browser; selenium would otherwise download one);
# systemd: systemd-analyze checks the units' sandbox (offline; nothing is started);
# mmdebstrap, for the clean Debian 12 root the package test installs into.
TEST_PACKAGES=(postgresql chromium chromium-driver systemd mmdebstrap)

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

# Userspace patches (tests/test_host_userspace.py, bench/userspace.py) are built
# from the Debian source of the installed glibc and OpenSSL, configured as
# debian/rules does: they need the packages' build dependencies, libc6-dbg of
# the installed libc6 (glibc's symbol positions), and a library whose exact
# source version the archive still serves. The security pool answers 404 for
# the .dsc of its newer OpenSSL builds (its index lists them all the same), so
# the libssl3 installed here is the newest version whose source the main
# archive serves, read now from that archive's source index (never written in
# this file), downgrading a newer libssl3 from the security archive if needed.
# The apt lists for this live in a private folder; the machine's sources stay.
userspace_test_deps() {
	local dir=/var/cache/suture-setup/apt
	$SUDO mkdir -p "$dir/lists/partial"
	echo "deb-src http://deb.debian.org/debian bookworm main" |
		$SUDO tee "$dir/sources.list" >/dev/null
	local opts=(-o "Dir::Etc::SourceList=$dir/sources.list" -o "Dir::State::Lists=$dir/lists")
	# (|| return 1: errexit does not hold inside a function called as a condition)
	$SUDO apt-get "${opts[@]}" update -qq || return 1
	local served installed
	served=$(apt-cache "${opts[@]}" showsrc openssl | awk '/^Version:/ {print $2}' |
		sort -V | tail -1)
	installed=$(dpkg-query -W -f='${Version}' libssl3 2>/dev/null || true)
	if [ -n "$served" ] && [ "$installed" != "$served" ]; then
		echo "setup: libssl3 $installed -> $served (the newest OpenSSL whose source is served)" >&2
		$SUDO env DEBIAN_FRONTEND=noninteractive apt-get "${opts[@]}" install -y -qq \
			--no-install-recommends --allow-downgrades \
			"libssl3=$served" "openssl=$served" "libssl-dev=$served" || return 1
	fi
	local libc
	libc=$(dpkg-query -W -f='${Version}' libc6)
	if [ "$(dpkg-query -W -f='${Version}' libc6-dbg 2>/dev/null || true)" != "$libc" ]; then
		apt_install "libc6-dbg=$libc" || return 1
	fi
	# apt-get build-dep is a no-op when everything is there already.
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get "${opts[@]}" build-dep -y -qq \
		glibc openssl >/dev/null
}
if [ "$WITH_TEST" = 1 ] && ! userspace_test_deps; then
	[ -z "${CI:-}" ] || { echo "setup: cannot install the userspace tests' packages" >&2; exit 1; }
	echo "setup: WARNING: the userspace tests' packages are missing; those tests will fail" >&2
fi

if [ ! -x .venv/bin/python ]; then
	python3 -m venv .venv
fi
# compat editable mode: a plain path entry, no import hook; Python in the
# guest runs under software emulation, where every import costs.
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' --config-settings editable_mode=compat
# Bytecode now, so the guest (which starts fresh every boot) need not compile.
.venv/bin/python -m compileall -q suture tests bench >/dev/null
