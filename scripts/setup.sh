#!/usr/bin/env bash
# Install what Suture needs on a Debian 12 machine: apt packages and a
# virtualenv in .venv with the project and its dev tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || { echo "setup: run as root (apt-get needs it)" >&2; exit 1; }
	SUDO="sudo"
fi

# qemu + busybox + kmod: the lab guest; make/gcc/libelf: kbuild for modules;
# flex/bison/bc/dwarves/libssl-dev/patch/xz-utils: preparing distro source trees;
# cpio: unit tests read the lab's initramfs back; python3-venv: the virtualenv.
PACKAGES=(qemu-system-x86 busybox-static kmod cpio make gcc libelf-dev python3-venv
	flex bison bc dwarves libssl-dev patch xz-utils)

echo "setup: refreshing apt's package lists (the lab resolves kernels from them)" >&2
$SUDO apt-get update -qq
missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "setup: installing ${missing[*]}" >&2
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
	python3 -m venv .venv
fi
# compat editable mode: a plain path entry, no import hook; Python in the
# guest runs under software emulation, where every import costs.
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' --config-settings editable_mode=compat
# Bytecode now, so the guest (which starts fresh every boot) need not compile.
.venv/bin/python -m compileall -q suture tests bench >/dev/null
