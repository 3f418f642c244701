"""Debian build roots: a minimal system of one suite with a kernel build's toolchain, cached.

A build root is made once with ``mmdebstrap`` (or ``debootstrap`` where
mmdebstrap is missing) from the suite's own packages, never installed into
the host, and kept as the cache entry ``buildroot:<name>`` in
``<cache>/buildroots/<name>/``: ``root/`` (the system) and ``buildroot.json``
(written last: the root is complete; the suite, the packages, the compiler's
version line). The entry is evicted like a build, least recently used first.
suture.packages.toolchain runs commands in it.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from suture import progress
from suture.errors import DownloadError, ToolMissingError
from suture.fsutil import atomic_write, cache_dir, locked
from suture.packages import cache

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"

# What preparing a tree, compiling a unit and linking a module with kbuild
# need, besides the compiler (Debian package names). `gcc` is the suite's
# default compiler, kbuild's HOSTCC for its own programs (fixdep, objtool).
KBUILD_PACKAGES = (
    "gcc", "make", "bc", "flex", "bison", "libelf-dev", "libssl-dev", "dwarves", "python3", "kmod",
    "cpio", "patch", "xz-utils", "perl", "binutils",
)  # fmt: skip


@dataclass(frozen=True)
class BuildRootSpec:
    """One build root: a suite of Debian with a compiler.

    Attributes:
        name: its cache name, e.g. ``trixie-gcc-14``.
        suite: the Debian suite it is made of, e.g. ``trixie``.
        sources: one-line apt sources (the suite and its security updates).
        compiler: the package of the compiler, e.g. ``gcc-14``.
    """

    name: str
    suite: str
    sources: tuple[str, ...]
    compiler: str

    @property
    def packages(self) -> tuple[str, ...]:
        """Everything installed into the root."""
        return (self.compiler, *KBUILD_PACKAGES)


def debian_sources(suite: str) -> tuple[str, ...]:
    """The one-line apt sources of Debian ``suite`` and its security updates."""
    return (f"deb {MIRROR} {suite} main", f"deb {SECURITY} {suite}-security main")


def debian_suite(suite: str, compiler: str) -> BuildRootSpec:
    """The build root of Debian ``suite`` with ``compiler``, from the main archive."""
    return BuildRootSpec(f"{suite}-{compiler}", suite, debian_sources(suite), compiler)


def roots_dir() -> Path:
    """Where build roots live."""
    return cache_dir() / "buildroots"


def cached(spec: BuildRootSpec) -> Path | None:
    """The root of ``spec`` when it is whole in the cache and made as ``spec`` says, else None.

    A root made of other sources or packages (an older Suture's) is made again.
    """
    entry = roots_dir() / spec.name
    try:
        record = json.loads((entry / "buildroot.json").read_text())
    except (OSError, ValueError):
        return None
    if record.get("packages") != list(spec.packages) or record.get("sources") != list(spec.sources):
        return None
    return entry / "root"


def ensure(spec: BuildRootSpec) -> Path:
    """The root folder of ``spec``: made once (about 80 s and 0.6 GB), then reused.

    The entry stays pinned (never evicted) until this process exits.

    Raises:
        ToolMissingError: neither mmdebstrap nor debootstrap is installed.
        DownloadError: making the root failed; nothing is left in the cache.
    """
    cache.pin(cache.BUILDROOT, spec.name)
    made = False
    with locked(roots_dir() / ".lock"):
        root = cached(spec)
        if root is None:
            cache.remove_stale(roots_dir())  # under the lock: nothing is being made
            root = _make(spec)
            made = True
        cache.record_use(cache.BUILDROOT, spec.name)
    if made:
        cache.enforce()
    return root


def bootstrap_argv(
    spec: BuildRootSpec, target: Path, packages: tuple[str, ...] | None = None
) -> list[str]:
    """The command that makes a minimal system of ``spec``'s suite with ``packages`` in ``target``.

    ``packages`` defaults to the build root's (its compiler and kbuild's tools).

    Raises:
        ToolMissingError: neither mmdebstrap nor debootstrap is installed.
    """
    include = ",".join(spec.packages if packages is None else packages)
    if shutil.which("mmdebstrap"):
        # --mode=root: we are root, and the root's files are to be owned by root.
        return [
            "mmdebstrap", "--variant=minbase", "--mode=root", "--quiet",
            f"--include={include}",
            spec.suite, str(target), *spec.sources,
        ]  # fmt: skip
    if shutil.which("debootstrap"):
        return [
            "debootstrap", "--variant=minbase", f"--include={include}",
            spec.suite, str(target), spec.sources[0].split()[1],
        ]  # fmt: skip
    raise ToolMissingError(
        "neither mmdebstrap nor debootstrap is installed (a build root needs one)",
        hint="apt-get install mmdebstrap",
    )


def _make(spec: BuildRootSpec) -> Path:
    final = roots_dir() / spec.name
    if final.exists():
        # Not whole, or made otherwise. Never rmtree across a mount point.
        subprocess.run(["rm", "-rf", "--one-file-system", str(final)], check=False)
    log.info("making the build root %s (%s, %s) once", spec.name, spec.suite, spec.compiler)
    with tempfile.TemporaryDirectory(prefix=f".{spec.name}.", dir=roots_dir()) as tmp:
        work = Path(tmp)
        started = time.monotonic()
        with progress.heartbeat(f"making the build root {spec.name}"):
            proc = subprocess.run(
                bootstrap_argv(spec, work / "root"), capture_output=True, text=True, check=False
            )
        if proc.returncode != 0:
            raise DownloadError(
                f"making the build root {spec.name} failed:\n{proc.stderr.strip()[-3000:]}",
                hint="check the network; the command can be run again",
            )
        record = {
            "format": FORMAT_VERSION,
            "name": spec.name,
            "suite": spec.suite,
            "sources": list(spec.sources),
            "packages": list(spec.packages),
            "made": time.time(),
            "seconds": round(time.monotonic() - started, 1),
        }
        atomic_write(work / "buildroot.json", json.dumps(record, indent=2).encode())
        work.rename(final)
        work.mkdir()  # TemporaryDirectory removes a folder that is gone now
    return final / "root"
