"""Root file systems of other distro releases for lab guests, with Suture's agent from a wheel.

By default a guest runs the host's root (suture.lab.guest). ``--root NAME``
boots one of :data:`ROOTS` instead: a distro root file system made once into
the cache (entry ``rootfs:<name>``, ``<cache>/rootfs/<name>/``: ``root/``
and ``rootfs.json``, written last) from the distro's own packages, with
Suture installed from a wheel of this checkout into ``/opt/suture`` (a
virtual environment of the root's own Python). So the agent runs on the
userland it will meet on such a host: Debian 13's Python 3.13, not the
host's.

The wheel's dependencies are taken from the package index as binary wheels
for the root's Python (``pip download --python-version``), and installed
inside the root without the network. When this checkout's code changes, the
next use installs a new wheel (a few seconds); the distro part is made once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from suture.errors import DownloadError, UsageError
from suture.fsutil import atomic_write, cache_dir, locked
from suture.packages import buildroot, cache
from suture.packages.toolchain import Toolchain

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# Where the wheel is installed in the root, and so what the guest's PATH starts with.
VENV = "/opt/suture"
# The checkout the wheel is made of: the folder holding pyproject.toml above the package.
_PACKAGE = Path(__file__).resolve().parent.parent
PROJECT = _PACKAGE.parent


@dataclass(frozen=True)
class RootSpec:
    """A root file system guests can boot.

    Attributes:
        name: what ``--root`` takes, e.g. ``debian13``.
        suite: the Debian suite it is made of.
        sources: one-line apt sources.
        packages: installed besides the minimal base.
        python: the root's Python version (``3.13``): wheels are fetched for it.
    """

    name: str
    suite: str
    sources: tuple[str, ...]
    packages: tuple[str, ...]
    python: str


# What the guest's command and the agent use: Python, modprobe/insmod,
# ip, ps, dmesg (util-linux is in the base).
_GUEST_PACKAGES = ("python3", "python3-venv", "kmod", "iproute2", "procps")

ROOTS: dict[str, RootSpec] = {
    r.name: r
    for r in (
        RootSpec(
            "debian13",
            "trixie",
            buildroot.debian_sources("trixie"),
            _GUEST_PACKAGES,
            "3.13",
        ),
    )
}


def spec(name: str) -> RootSpec:
    """The root named ``name``.

    Raises:
        UsageError: no such root.
    """
    found = ROOTS.get(name)
    if found is None:
        raise UsageError(
            f"no root file system named {name!r}",
            hint=f"the roots are: {', '.join(sorted(ROOTS))} (or none: the host's root)",
        )
    return found


def roots_dir() -> Path:
    """Where root file systems live."""
    return cache_dir() / "rootfs"


def source_digest() -> str:
    """A digest of this checkout's package files: a new one means a new wheel."""
    digest = hashlib.sha256()
    files = [PROJECT / "pyproject.toml", *sorted(_PACKAGE.rglob("*"))]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(PROJECT)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def ensure(name: str) -> Path:
    """The root folder of root file system ``name``, made once, with this checkout's wheel.

    Pinned in the cache until the process exits.

    Raises:
        UsageError: no such root.
        DownloadError: making the root, the wheel or installing it failed.
    """
    root_spec = spec(name)
    cache.pin(cache.ROOTFS, name)
    entry = roots_dir() / name
    made = False
    with locked(roots_dir() / ".lock"):
        if not (entry / "rootfs.json").exists():
            cache.remove_stale(roots_dir())
            _make(root_spec, entry)
            made = True
        record = json.loads((entry / "rootfs.json").read_text())
        digest = source_digest()
        if record.get("suture") != digest:
            _install_wheel(root_spec, entry / "root")
            record["suture"] = digest
            record["wheel_installed"] = time.time()
            atomic_write(entry / "rootfs.json", json.dumps(record, indent=2).encode())
        cache.record_use(cache.ROOTFS, name)
    if made:
        cache.enforce()
    return entry / "root"


def _make(root_spec: RootSpec, final: Path) -> None:
    log.info("making the root file system %s once", root_spec.name)
    bootstrap = buildroot.BuildRootSpec(
        root_spec.name, root_spec.suite, root_spec.sources, root_spec.packages[0]
    )
    with tempfile.TemporaryDirectory(prefix=f".{root_spec.name}.", dir=roots_dir()) as tmp:
        work = Path(tmp)
        started = time.monotonic()
        argv = buildroot.bootstrap_argv(bootstrap, work / "root", root_spec.packages)
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise DownloadError(
                f"making the root file system {root_spec.name} failed:\n"
                f"{proc.stderr.strip()[-3000:]}",
                hint="check the network; the command can be run again",
            )
        record = {
            "format": FORMAT_VERSION,
            "name": root_spec.name,
            "suite": root_spec.suite,
            "packages": list(root_spec.packages),
            "made": time.time(),
            "seconds": round(time.monotonic() - started, 1),
            "suture": "",
        }
        atomic_write(work / "rootfs.json", json.dumps(record, indent=2).encode())
        if final.exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(final)], check=False)
        work.rename(final)
        work.mkdir()


def _pip(argv: list[str], what: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise DownloadError(
            f"{what} failed:\n{(proc.stderr or proc.stdout).strip()[-3000:]}",
            hint="check that the package index can be reached",
        )


def _install_wheel(root_spec: RootSpec, root: Path) -> None:
    """Build this checkout's wheel, fetch its dependencies for the root's Python, install both."""
    log.info("installing this checkout's wheel into %s", root_spec.name)
    wheels = root / "var" / "cache" / "suture-wheels"
    if wheels.exists():
        subprocess.run(["rm", "-rf", str(wheels)], check=False)
    wheels.mkdir(parents=True)
    _pip(["wheel", "--no-deps", "-w", str(wheels), str(PROJECT)], "building Suture's wheel")
    (wheel,) = wheels.glob("suture-*.whl")
    _pip(
        [
            "download", "--only-binary=:all:", "--python-version", root_spec.python,
            "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
            "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
            "--platform", "any", "-d", str(wheels), f"{wheel}[server]",
        ],
        f"fetching the wheel's dependencies for Python {root_spec.python}",
    )  # fmt: skip
    # No compiler here: the toolchain's wrapper is how a command runs chrooted in a root.
    inside = Toolchain("", "", root, root_spec.name)
    venv = f"{VENV}/bin"
    pip = f"{venv}/pip install -q --no-index --disable-pip-version-check"
    found = "/var/cache/suture-wheels"
    # The dependencies once; the wheel itself again each time (its version stays 0.1.0).
    # With the server's: the guest has no network, so a test of the agent on this
    # userland serves its repository on the guest's loopback.
    script = (
        f"set -e; [ -x {venv}/python ] || python3 -m venv {VENV}; "
        f"{pip} --find-links {found} '{found}/{wheel.name}[server]'; "
        f"{pip} --no-deps --force-reinstall {found}/{wheel.name}"
    )
    proc = inside.run(["sh", "-c", script], cwd=Path("/"))
    if proc.returncode != 0:
        raise DownloadError(
            f"installing Suture's wheel into {root_spec.name} failed:\n"
            f"{(proc.stderr or proc.stdout).strip()[-3000:]}",
            hint="remove the root ('suture lab cache --prune') and run the command again",
        )
