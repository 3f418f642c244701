#!/usr/bin/env bash
# Build the Debian 12 packages into dist/ (or the folder given):
#
#   suture-agent   /usr/bin/suture, the agent and every command's code in
#                  /usr/lib/suture (with the Python libraries Debian 12 lacks
#                  or has too old: tuf, securesystemslib, cryptography, cffi,
#                  urllib3), /etc/suture/agent.toml, the suture-agent and
#                  suture-boot units, the man page and bash completion.
#   suture-server  what the builder and the server add (the extras "builder"
#                  and "server" of pyproject.toml: pyelftools, uvicorn,
#                  starlette, pydantic, jinja2, psycopg...) in
#                  /usr/lib/suture-server, the suture-server unit, the
#                  repository refresh unit and timer, and the build tools as
#                  dependencies.
#
# Run it on Debian 12 amd64 with the project's virtualenv (scripts/setup.sh):
# the libraries are the wheels pip resolves for this Python (3.11, as
# Debian 12's), compiled to bytecode for /usr/lib. Needs dpkg-deb.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=$(realpath -m "${1:-dist}")
VERSION=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
ARCH=$(dpkg --print-architecture)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

say() { echo "package: $*" >&2; }
pip_into() { # DIR PACKAGES...: binary wheels only, installed flat into DIR
	local dir=$1
	shift
	"$PY" -m pip install -q --disable-pip-version-check --no-compile --only-binary=:all: \
		--target "$dir" "$@"
	rm -rf "$dir/bin" # console scripts pip made for the virtualenv's Python
}
bytecode() { # ROOT DIR: compile DIR (inside ROOT) for the paths it will have once installed
	"$PY" -m compileall -q -j0 -s "$1" -p / "$1$2" >/dev/null
}
control() { # ROOT NAME DEPENDS DESCRIPTION...
	local root=$1 name=$2 depends=$3
	shift 3
	local size
	size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
	{
		echo "Package: $name"
		echo "Version: $VERSION"
		echo "Architecture: $ARCH"
		echo "Maintainer: Suture developers <suture@localhost>"
		echo "Installed-Size: $size"
		echo "Depends: $depends"
		[ -n "${RECOMMENDS:-}" ] && echo "Recommends: $RECOMMENDS"
		echo "Section: admin"
		echo "Priority: optional"
		printf 'Description: %s\n' "$1"
		shift
		local line
		for line in "$@"; do printf ' %s\n' "$line"; done
	} >"$root/DEBIAN/control"
	(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
		xargs -0 md5sum) >"$root/DEBIAN/md5sums"
}
build() { # ROOT NAME
	local deb="$OUT/${2}_${VERSION}_${ARCH}.deb"
	find "$1" -type d -exec chmod 0755 {} +
	dpkg-deb --root-owner-group -Zxz --build "$1" "$deb" >/dev/null
	say "built $deb ($(du -h "$deb" | cut -f1))"
}

say "building the suture wheel"
"$PY" -m pip wheel -q --disable-pip-version-check --no-deps \
	-w "$WORK/wheels" .
wheel=$(echo "$WORK"/wheels/suture-*.whl)

# --- suture-agent -----------------------------------------------------------------
A=$WORK/agent
mkdir -p "$A/DEBIAN" "$A/usr/bin" "$A/usr/lib/suture" "$A/etc/suture" "$A/lib/systemd/system" \
	"$A/usr/share/man/man1" "$A/usr/share/bash-completion/completions" \
	"$A/usr/share/doc/suture-agent"
say "suture-agent: the package and the libraries Debian 12 lacks"
pip_into "$A/usr/lib/suture" "$wheel"
bytecode "$A" /usr/lib/suture
cat >"$A/usr/bin/suture" <<'EOF'
#!/usr/bin/python3 -I
"""suture: rebootless live patching for Linux fleets (Debian package suture-agent)."""
import sys

# -I: no user site, no PYTHON* variables, not the current folder: root runs this.
# suture-server adds the builder's and the server's libraries.
sys.path[0:0] = ["/usr/lib/suture", "/usr/lib/suture-server"]
from suture.cli.main import main  # noqa: E402

sys.exit(main())
EOF
chmod 0755 "$A/usr/bin/suture"
# Installed, the agent does nothing until a server is configured.
sed -e 's|^server = |# server = |' packaging/agent.toml.example >"$A/etc/suture/agent.toml"
chmod 0644 "$A/etc/suture/agent.toml"
echo /etc/suture/agent.toml >"$A/DEBIAN/conffiles"
install -m 0644 packaging/systemd/suture-agent.service packaging/systemd/suture-boot.service \
	"$A/lib/systemd/system/"
"$PY" -I -c \
	'import sys; sys.path.insert(0, sys.argv[1]); from suture.cli.main import main; sys.exit(main(["docs", "man"]))' \
	"$A/usr/lib/suture" | gzip -9n >"$A/usr/share/man/man1/suture.1.gz"
"$PY" -I -c \
	'import sys; sys.path.insert(0, sys.argv[1]); from suture.cli.main import main; sys.exit(main(["docs", "completion"]))' \
	"$A/usr/lib/suture" >"$A/usr/share/bash-completion/completions/suture"
install -m 0644 README.md "$A/usr/share/doc/suture-agent/README.md"
cat >"$A/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
if [ "$1" = configure ] && [ -z "$2" ]; then
	echo "suture-agent: set server and trusted_root in /etc/suture/agent.toml, then"
	echo "  systemctl enable --now suture-boot suture-agent"
fi
EOF
cat >"$A/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
	rm -rf /var/lib/suture
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
EOF
chmod 0755 "$A/DEBIAN/postinst" "$A/DEBIAN/postrm"
control "$A" suture-agent "python3 (>= 3.11), python3 (<< 3.12)" \
	"rebootless live patching for Linux fleets: the agent" \
	"Applies signed, tested live patches for exactly the kernel build a host runs," \
	"without a reboot, through the kernel's livepatch core. suture update and the" \
	"suture-agent service fetch and verify them (TUF), suture-boot re-applies the" \
	"level after a reboot. Bundles tuf, securesystemslib, cryptography, cffi and" \
	"urllib3 (Debian 12 has none, or too old ones)."
build "$A" suture-agent

# --- suture-server ----------------------------------------------------------------
S=$WORK/server
mkdir -p "$S/DEBIAN" "$S/usr/lib/suture-server" "$S/lib/systemd/system" \
	"$S/usr/share/doc/suture-server"
say "suture-server: the builder's and the server's libraries"
mapfile -t SERVER_LIBS < <("$PY" -c 'import tomllib
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
print("\n".join(extras["builder"] + extras["server"]))')
pip_into "$S/usr/lib/suture-server" "${SERVER_LIBS[@]}"
bytecode "$S" /usr/lib/suture-server
install -m 0644 packaging/systemd/suture-server.service packaging/systemd/suture-repo-refresh.service \
	packaging/systemd/suture-repo-refresh.timer "$S/lib/systemd/system/"
install -m 0644 README.md "$S/usr/share/doc/suture-server/README.md"
cat >"$S/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
EOF
chmod 0755 "$S/DEBIAN/postinst"
RECOMMENDS="gcc, make, libelf-dev, flex, bison, bc, dwarves, libssl-dev, patch, xz-utils, kmod, cpio, qemu-system-x86, busybox-static, stress-ng, apt" \
	control "$S" suture-server "suture-agent (= $VERSION)" \
	"rebootless live patching for Linux fleets: builder, tester and server" \
	"suture build, test, release, publish and serve: turns kernel fixes into live" \
	"patches for exact Debian kernel builds, tests them in QEMU guests, signs them" \
	"into a TUF repository, and serves it with the fleet API and dashboard." \
	"Bundles pyelftools and the server's stack (uvicorn, starlette, pydantic, jinja2," \
	"psycopg)."
build "$S" suture-server
