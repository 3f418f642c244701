"""Where a kernel build's compiler runs: the host, or a build root of the build's own distro.

A kernel build is compiled with exactly the compiler its ``CONFIG_CC_VERSION_TEXT``
names, or unchanged code does not compile to the bytes the build shipped.
That compiler is often not the host's (a Debian 12 host building for
Debian 13's gcc-14), and is never installed into the host: it runs in a
*build root*, a minimal system of the build's own distro kept in the cache
(suture/packages/buildroot.py makes Debian's).

A :class:`Toolchain` turns a command (``make ...``) into one that runs with
that compiler: the host's is the command itself; a build root's runs it
chrooted into the root, in a mount namespace of its own (``unshare``) where
the cache, Suture's package, the temporary folder and the command's own
folders are bound at the same paths, so every path of the command means
the same file inside as outside. That needs root, as the lab's users and
CI are.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from suture.errors import BuildError, ToolMissingError
from suture.fsutil import cache_dir

# The package's folder: the builder's include folder (KCFLAGS -I...) is in it.
_PACKAGE_DIR = Path(__file__).resolve().parent.parent

# PATH inside a build root: its own programs only (the host's PATH may name
# folders such as pyenv shims that would shadow them if they were bound).
_ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Runs as `sh -c SCRIPT suture-buildroot ROOT CWD N BIND1..BINDN ARGV...` in a
# new mount namespace (private propagation: nothing leaks back to the host).
_ENTER = r"""
set -e
root=$1; cwd=$2; n=$3; shift 3
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
while [ "$n" -gt 0 ]; do
	mkdir -p "$root$1"
	mount --rbind "$1" "$root$1"
	shift; n=$((n - 1))
done
exec chroot "$root" /usr/bin/env PATH="$SUTURE_ROOT_PATH" \
	/bin/sh -c 'cd "$1" && shift && exec "$@"' suture-cd "$cwd" "$@"
"""


@dataclass(frozen=True)
class Toolchain:
    """The compiler of one kernel build and where it runs.

    Attributes:
        cc: the compiler command the build's config names, e.g. ``x86_64-linux-gnu-gcc-14``.
        version_text: its ``--version`` first line, as ``CONFIG_CC_VERSION_TEXT`` holds it.
        root: the build root it runs in; None: the host.
        name: the build root's name in the cache ("" for the host).
    """

    cc: str
    version_text: str
    root: Path | None = None
    name: str = ""

    @property
    def on_host(self) -> bool:
        """The compiler is the host's: commands run as they are."""
        return self.root is None

    def describe(self) -> str:
        """For messages: ``gcc-12 on the host``, ``gcc-14 in build root trixie-gcc-14``."""
        if self.root is None:
            return f"{self.cc} on the host"
        return f"{self.cc} in build root {self.name}"

    def wrap(
        self, argv: Sequence[str], *, cwd: Path | None = None, paths: Sequence[Path] = ()
    ) -> list[str]:
        """``argv`` as a command that runs with this compiler, in ``cwd`` (default: ours).

        Inside a build root, ``paths`` (besides the cache, Suture's package
        and the temporary folder) are visible at the same paths.
        """
        if self.root is None:
            return list(argv)
        where = str((cwd or Path.cwd()).resolve())
        binds = self._binds([*paths, Path(where)])
        return [
            "env", f"SUTURE_ROOT_PATH={_ROOT_PATH}",
            "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", _ENTER, "suture-buildroot", str(self.root), where, str(len(binds)),
            *binds, *argv,
        ]  # fmt: skip

    def _binds(self, extra: Sequence[Path]) -> list[str]:
        """Host folders to bind: existing ones, outermost first, none inside another."""
        wanted = [cache_dir(), _PACKAGE_DIR, Path(tempfile.gettempdir()), *extra]
        found = sorted({str(p.resolve()) for p in wanted if p.is_dir()}, key=len)
        binds: list[str] = []
        for path in found:
            # A folder inside one already bound is there already; binding "/" or a
            # system folder would hide the build root's own programs.
            if path in ("/", "/usr", "/etc", "/bin", "/lib", "/sbin", "/proc", "/dev"):
                continue
            if not any(path == b or path.startswith(b + "/") for b in binds):
                binds.append(path)
        return binds

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        paths: Sequence[Path] = (),
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` with this compiler; its output is captured (text)."""
        if self.root is not None and shutil.which("unshare") is None:
            raise ToolMissingError("unshare is not installed", hint="apt-get install util-linux")
        if self.root is not None and os.geteuid() != 0:
            raise BuildError(
                f"compiling with {self.describe()} needs root (a mount namespace and chroot)",
                hint="run the build as root, as CI does",
            )
        return subprocess.run(
            self.wrap(argv, cwd=cwd, paths=paths),
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )

    def version(self) -> str:
        """The first line of ``cc --version`` where this toolchain runs ("" when missing)."""
        if self.root is None and shutil.which(self.cc) is None:
            return ""
        try:
            proc = self.run([self.cc, "--version"], cwd=Path("/"))
        except ToolMissingError:
            return ""
        lines = proc.stdout.splitlines() if proc.returncode == 0 else []
        return lines[0].strip() if lines else ""


def required_compiler(config_text: str) -> tuple[str, str]:
    """The compiler command and its ``--version`` line that built the kernel.

    ``CONFIG_CC_VERSION_TEXT`` is the first line of ``$(CC) --version``;
    its first word is the command (``gcc-12``, ``x86_64-linux-gnu-gcc-14``).

    Raises:
        BuildError: the config names no compiler.
    """
    text = config_value(config_text, "CC_VERSION_TEXT")
    if not text:
        raise BuildError("the kernel config names no compiler (CONFIG_CC_VERSION_TEXT)")
    return text.split(" ", 1)[0], text


def config_value(config_text: str, key: str) -> str:
    """The value of ``CONFIG_<key>`` in a .config text ("" when unset), quotes removed."""
    for line in config_text.splitlines():
        if line.startswith(f"CONFIG_{key}="):
            return line.split("=", 1)[1].strip().strip('"')
    return ""


def host(config_text: str) -> Toolchain:
    """The host's compiler for a build (whether it is the right one is checked by the caller)."""
    cc, wanted = required_compiler(config_text)
    return Toolchain(cc, wanted)


def mismatch(config_text: str, tried: Sequence[tuple[str, str]]) -> BuildError:
    """The refusal when nothing provides the exact compiler: ``tried`` is (where, its version)."""
    _cc, wanted = required_compiler(config_text)
    seen = "; ".join(f"{where}: {found or 'missing'}" for where, found in tried)
    return BuildError(
        f"this kernel was built with '{wanted}', and no toolchain here has exactly that "
        f"compiler ({seen})",
        hint=f"build where exactly '{wanted}' can be had (the build's own distro release), "
        "so that unchanged code compiles to the same bytes",
    )
