"""Debian source packages of shared libraries: fetched, patched, configured once per version.

``apt-get source`` through a private ``deb-src`` list (the host's apt
sources are never touched) unpacks the package with Debian's own patches
applied. The tree is then configured as ``debian/rules`` does it, with the
flags ``dpkg-buildflags`` gives, and only the generated files a single
object needs are made. The configured tree is kept under
``$SUTURE_CACHE/userspace/<package>=<version>/`` and marked complete last.

Each package is a row of :data:`PACKAGES`: which library it ships, how its
tree is configured, and how one object's compile command is found (the
package's own make, dry run).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from suture.errors import DownloadError, UserspaceBuildError

DEB_SRC = (
    "deb-src http://deb.debian.org/debian bookworm main\n"
    "deb-src http://deb.debian.org/debian-security bookworm-security main\n"
)
_DONE = ".suture-configured"


def cache_root() -> Path:
    """``$SUTURE_CACHE/userspace`` (default ``~/.cache/suture/userspace``)."""
    base = os.environ.get("SUTURE_CACHE") or str(Path.home() / ".cache" / "suture")
    return Path(base) / "userspace"


def _run(cmd: list[str] | str, cwd: Path, env: dict[str, str] | None = None) -> str:
    shell = isinstance(cmd, str)
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, shell=shell, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        what = cmd if shell else shlex.join(cmd)
        raise UserspaceBuildError(
            f"{what} failed in {cwd} (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}",
            reason="source",
        )
    return proc.stdout


@dataclass(frozen=True)
class Package:
    """A source package whose shared library Suture patches."""

    source: str  # Debian source package
    binary: str  # the binary package that ships the library
    soname: str
    library: Path  # where it is installed here
    configure: Callable[[Path], Path]  # tree -> its build folder, configured
    object_of: Callable[[Path, str], tuple[Path, str]]  # (build, source file) -> (cwd, make target)
    dbg_dir: Path | None = None  # a -dbg package's /usr/lib/debug/.build-id, when there is one
    files: str = ""  # the prefix of the source files that go into the library


def _glibc_configure(tree: Path) -> Path:
    env = {**os.environ, "DEB_BUILD_OPTIONS": "nocheck parallel=2"}
    _run(["debian/rules", "configure_libc"], tree, env)
    return tree / "build-tree" / "amd64-libc"


def _glibc_object(build: Path, source: str) -> tuple[Path, str]:
    subdir, name = source.rsplit("/", 1)
    return build.parent.parent / subdir, f"{build}/{subdir}/{Path(name).stem}.os"


_OPENSSL_CONF = (
    "shared --prefix=/usr --openssldir=/usr/lib/ssl --libdir=lib/x86_64-linux-gnu no-idea "
    "no-mdc2 no-rc5 no-zlib no-ssl3 enable-unit-test no-ssl3-method enable-rfc3779 enable-cms "
    "no-capieng no-rdrand enable-ec_nistp_64_gcc_128 debian-amd64"
)


def _openssl_configure(tree: Path) -> Path:
    # debian/rules runs dh with DEB_BUILD_MAINT_OPTIONS=hardening=+all future=+lfs,
    # which exports dpkg-buildflags' CFLAGS/CPPFLAGS/LDFLAGS to ./Configure.
    env = {**os.environ, "DEB_BUILD_MAINT_OPTIONS": "hardening=+all future=+lfs"}
    flags = _run(["dpkg-buildflags", "--export=sh"], tree, env)
    build = tree / "build_shared"
    build.mkdir(exist_ok=True)
    script = f"{flags}\nHASHBANGPERL=/usr/bin/perl ../Configure {_OPENSSL_CONF} && " \
             "make build_generated"  # fmt: skip
    _run(script, build, env)
    return build


def _openssl_object(build: Path, source: str) -> tuple[Path, str]:
    folder, name = source.rsplit("/", 1)
    return build, f"{folder}/libcrypto-shlib-{Path(name).stem}.o"


PACKAGES: dict[str, Package] = {
    "glibc": Package(
        "glibc", "libc6", "libc.so.6", Path("/lib/x86_64-linux-gnu/libc.so.6"),
        _glibc_configure, _glibc_object, Path("/usr/lib/debug/.build-id"),
    ),
    "openssl": Package(
        "openssl", "libssl3", "libcrypto.so.3", Path("/usr/lib/x86_64-linux-gnu/libcrypto.so.3"),
        _openssl_configure, _openssl_object, files="crypto/",
    ),
}  # fmt: skip


def package(spec: str) -> tuple[Package, str]:
    """``SRC[=VERSION]`` -> the package row and the version (the installed one by default).

    Raises:
        UserspaceBuildError: an unknown package, or its library is not installed.
    """
    name, _, version = spec.partition("=")
    row = PACKAGES.get(name)
    if row is None:
        raise UserspaceBuildError(
            f"Suture does not build userspace patches for {name!r}",
            reason="source",
            hint=f"packages: {', '.join(PACKAGES)}",
        )
    if not version:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", f"{row.binary}:amd64"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        version = out.stdout.strip()
        if not version:
            raise UserspaceBuildError(f"{row.binary} is not installed", reason="source")
    return row, version


def prepared_tree(row: Package, version: str, log: Callable[[str], None]) -> tuple[Path, Path]:
    """The unpacked, patched, configured tree of ``row`` at ``version``, and its build folder.

    Raises:
        DownloadError: the archive does not serve that version's source.
        UserspaceBuildError: configuring it failed.
    """
    # No "=" in the folder: make takes it for an assignment in target names.
    home = cache_root() / f"{row.source}_{version}"
    upstream = re.sub(r"^\d+:", "", version).split("-")[0]
    tree = home / f"{row.source}-{upstream}"
    if (home / _DONE).exists():
        return tree, Path((home / _DONE).read_text().strip())
    home.mkdir(parents=True, exist_ok=True)
    if not tree.is_dir():
        log(f"fetching the source of {row.source} {version}")
        _fetch(row.source, version, home)
    log(f"configuring {row.source} {version} as debian/rules does (once)")
    build = row.configure(tree)
    (home / _DONE).write_text(str(build))
    return tree, build


def _fetch(source: str, version: str, home: Path) -> None:
    lists = home.parent / "apt"
    (lists / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (lists / "sources.list").write_text(DEB_SRC)
    opts = [
        f"-oDir::Etc::SourceList={lists / 'sources.list'}",
        "-oDir::Etc::SourceParts=/dev/null",
        f"-oDir::State::Lists={lists / 'lists'}",
    ]
    for cmd in (["apt-get", *opts, "update"], ["apt-get", *opts, "source", f"{source}={version}"]):
        proc = subprocess.run(cmd, cwd=home, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise DownloadError(
                f"{shlex.join(cmd[:1] + cmd[4:])} failed: {proc.stderr.strip()[-800:]}",
                hint="the archive may no longer serve this version's source "
                "(install the version it serves)",
            )


def compile_command(row: Package, build: Path, source: str) -> tuple[Path, list[str], str]:
    """How the package's make compiles ``source``: (folder, argv, object path in argv).

    The object is made once for real (that also makes the generated headers
    it needs, which a dry run cannot), then make's dry run (``-n``) with the
    source taken as new (``-W``) prints the command.
    """
    cwd, target = row.object_of(build, source)
    objdir = [f"objdir={build}"] if row.source == "glibc" else []
    _run(["make", "-r", "-j2", *objdir, target], cwd)
    # make knows the source by the name its rules use: absolute (glibc), ../x (OpenSSL)
    src = str(build.parent.parent / source) if row.source == "glibc" else f"../{source}"
    out = _run(["make", "-r", "-n", "-W", src, *objdir, target], cwd)
    for line in out.splitlines():
        if " -c " in line and target in line and ("gcc" in line or "cc " in line):
            argv = shlex.split(line.strip())
            return cwd, argv, target
    raise UserspaceBuildError(f"make does not say how it compiles {source}", reason="source")
