"""Ask apt about distro kernel packages, and download them: the host's lists or private ones.

Nothing here installs into the host: packages are downloaded with
``apt-get download`` and unpacked with ``dpkg-deb -x`` by the caller.

Series whose suites the host's apt does not list (trixie, trixie-security,
trixie-backports, bookworm-backports on a Debian 12 host) are read through a
private :class:`Archive`: a source list, package lists, apt's cache and an
empty dpkg status of its own under ``<cache>/apt/<name>/``, passed to every
apt call with ``-o`` options. The host's apt configuration and state are
never written. The host's keyring verifies the private lists as it does its own.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from suture import progress
from suture.errors import DownloadError, KernelNotFoundError, ToolMissingError
from suture.fsutil import atomic_write, cache_dir, locked

# The meta-package whose dependency names the current Debian 12 amd64 kernel.
DEFAULT_META = "linux-image-amd64"
FORMAT_VERSION = 1
# Private lists older than this are refreshed before use (seconds): the archive
# moves about daily, and a refresh costs a few seconds.
MAX_AGE = 24 * 3600

log = logging.getLogger(__name__)

_APT_HINT = "run 'apt-get update' (as root) so that apt knows the archive's packages"


@dataclass(frozen=True)
class Archive:
    """Where apt looks for a series' packages.

    Attributes:
        name: "" for the host's own apt configuration; otherwise the private
            configuration kept in ``<cache>/apt/<name>/``.
        sources: the private configuration's one-line sources
            (``deb URI SUITE COMPONENT...``).
    """

    name: str = ""
    sources: tuple[str, ...] = ()

    @property
    def private(self) -> bool:
        """The archive is read through a private configuration, not the host's."""
        return bool(self.name)

    @property
    def root(self) -> Path:
        """The private configuration's folder."""
        return cache_dir() / "apt" / self.name

    def options(self) -> list[str]:
        """The ``-o`` options that make apt read this archive (none for the host's)."""
        if not self.private:
            return []
        root = self.root
        return [
            "-o", f"Dir::Etc::SourceList={root / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={root / 'lists'}",
            # An empty dpkg status: what the host has installed is not the archive.
            "-o", f"Dir::State::status={root / 'status'}",
            # apt-cache would otherwise rebuild the host's pkgcache.bin from our lists.
            "-o", f"Dir::Cache={root / 'cache'}",
            # The cache folder need not be readable by the _apt user.
            "-o", "APT::Sandbox::User=root",
        ]  # fmt: skip

    def hint(self) -> str:
        """What to do when this archive lists nothing useful."""
        if self.private:
            return "run 'suture lab update' to refresh Suture's private package lists"
        return _APT_HINT


HOST = Archive()


def _apt(argv: list[str], archive: Archive) -> list[str]:
    """``argv`` (an apt program and its arguments) reading ``archive``."""
    if archive.private:
        ensure_lists(archive)
    return [argv[0], *archive.options(), *argv[1:]]


def _run(argv: list[str], archive: Archive = HOST) -> str:
    if shutil.which(argv[0]) is None:
        raise ToolMissingError(
            f"{argv[0]} is not installed", hint="run Suture on Debian or Ubuntu, which ship apt"
        )
    proc = subprocess.run(_apt(argv, archive), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise KernelNotFoundError(
            f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout.strip()}",
            hint=archive.hint(),
        )
    return proc.stdout


def _stamp(archive: Archive) -> Path:
    return archive.root / "updated.json"


def lists_age(archive: Archive) -> float | None:
    """Seconds since the private lists were refreshed for the current sources (None: never)."""
    try:
        data = json.loads(_stamp(archive).read_text())
        if data.get("sources") != list(archive.sources):
            return None
        return max(0.0, time.time() - float(data["updated"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_lists(archive: Archive, *, refresh: bool = False) -> None:
    """Make the private lists of ``archive`` current: fetched once, refreshed after a day.

    Under a lock, so that processes side by side refresh once. ``refresh``
    forces it. The host's apt lists are left alone.

    Raises:
        DownloadError: ``apt-get update`` failed (no network, or a bad signature).
    """
    if not archive.private:
        return
    with locked(archive.root.parent / f".{archive.name}.lock"):
        age = lists_age(archive)
        if not refresh and age is not None and age < MAX_AGE:
            return
        root = archive.root
        (root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        (root / "status").touch()
        atomic_write(root / "sources.list", "".join(f"{s}\n" for s in archive.sources).encode())
        argv = ["apt-get", *archive.options(), "-q", "update"]
        log.info("refreshing the package lists of %s", archive.name)
        with progress.heartbeat(f"refreshing the package lists of {archive.name}"):
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        # apt-get update exits 0 on some failed fetches: its "E:" lines say so, and
        # lists without a single Packages index are no lists.
        bad = [line for line in proc.stderr.splitlines() if line.startswith("E:")]
        indexes = [p for p in (root / "lists").iterdir() if "_Packages" in p.name]
        if proc.returncode != 0 or bad or not indexes:
            raise DownloadError(
                f"refreshing the package lists of {archive.name} failed: "
                f"{proc.stderr.strip()[-2000:]}",
                hint="check the network, then run 'suture lab update'",
            )
        record = {
            "format": FORMAT_VERSION,
            "updated": time.time(),
            "sources": list(archive.sources),
        }
        atomic_write(_stamp(archive), json.dumps(record).encode())


def default_release(meta: str = DEFAULT_META, archive: Archive = HOST) -> str:
    """The kernel release the distro's meta-package depends on now, e.g. ``6.1.0-56-amd64``.

    Resolved at run time so that the lab follows the archive as it moves on.
    """
    out = _run(["apt-cache", "depends", meta], archive)
    match = re.search(r"Depends:\s+linux-image-(\S+)", out)
    if match is None:
        raise KernelNotFoundError(f"{meta} names no kernel image", hint=archive.hint())
    return match.group(1)


def versions(package: str, archive: Archive = HOST) -> list[str]:
    """Every version of ``package`` the archive offers, newest first ([] when unknown)."""
    return madison([package], archive).get(package, [])


def madison(packages: list[str], archive: Archive = HOST) -> dict[str, list[str]]:
    """The versions of each of ``packages`` the archive offers, newest first, in one apt call.

    A package the archive does not have is missing from the result.
    """
    if not packages:
        return {}
    out = subprocess.run(
        _apt(["apt-cache", "madison", *packages], archive),
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= 2 and parts[0] in packages:
            seen = found.setdefault(parts[0], [])
            if parts[1] not in seen:  # the same version from two suites is one version
                seen.append(parts[1])
    return found


def pkgnames(prefix: str, archive: Archive = HOST) -> list[str]:
    """The names of the packages apt knows that start with ``prefix``, sorted."""
    return sorted(_run(["apt-cache", "pkgnames", prefix], archive).split())


def depends(package: str, version: str, archive: Archive = HOST) -> list[str]:
    """The names ``package=version`` depends on (alternatives and versions dropped)."""
    out = _run(["apt-cache", "show", f"{package}={version}"], archive)
    names: list[str] = []
    for line in out.splitlines():
        if line.startswith("Depends:"):
            for dep in line.removeprefix("Depends:").split(","):
                names.append(dep.split("|")[0].split("(")[0].strip())
            break
    return names


def sizes(specs: list[str], archive: Archive = HOST) -> int:
    """The bytes ``apt-get download`` of ``name=version`` packages fetches (0: unknown)."""
    proc = subprocess.run(
        _apt(["apt-cache", "show", "--no-all-versions", *specs], archive),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        return 0
    return sum(int(line.split()[1]) for line in proc.stdout.splitlines()
               if line.startswith("Size: ") and line.split()[1].isdigit())  # fmt: skip


def download(specs: list[str], dest: Path, archive: Archive = HOST) -> list[Path]:
    """Download ``name=version`` packages into ``dest``, logging bytes and percent as they come.

    Raises:
        DownloadError: apt-get failed (no network, or the version left the archive).
    """
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.glob("*.deb"))
    # APT::Sandbox::User=root: the cache folder may not be readable by _apt.
    argv = _apt(["apt-get", "-o", "APT::Sandbox::User=root", "download", *specs], archive)
    transfer = progress.Transfer(f"downloading {len(specs)} package(s)", sizes(specs, archive))

    def fetched() -> str:
        return transfer.line(sum(p.stat().st_size for p in dest.iterdir() if p.is_file()))

    with progress.heartbeat(transfer.what, measure=fetched):
        proc = subprocess.run(argv, cwd=dest, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DownloadError(
            f"apt-get download {' '.join(specs)} failed: {proc.stderr.strip()}",
            hint="check the network and the apt sources, then run the command again",
        )
    return sorted(set(dest.glob("*.deb")) - before)


def unpack(deb: Path, root: Path) -> None:
    """Unpack ``deb`` into ``root`` without running any maintainer script."""
    with progress.heartbeat(f"unpacking {deb.name}"):
        proc = subprocess.run(
            ["dpkg-deb", "-x", str(deb), str(root)], capture_output=True, text=True, check=False
        )
    if proc.returncode != 0:
        raise DownloadError(
            f"dpkg-deb -x {deb.name} failed: {proc.stderr.strip()}",
            hint="the download may be damaged; remove it and run the command again",
        )
