"""Ask the system's apt tools about Debian kernel packages, and download them.

Nothing here installs into the host: packages are downloaded with
``apt-get download`` and unpacked with ``dpkg-deb -x`` by the caller.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from suture import progress
from suture.errors import DownloadError, KernelNotFoundError, ToolMissingError

# The meta-package whose dependency names the current Debian 12 amd64 kernel.
DEFAULT_META = "linux-image-amd64"

_APT_HINT = "run 'apt-get update' (as root) so that apt knows the archive's packages"


def _run(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        raise ToolMissingError(
            f"{argv[0]} is not installed", hint="run Suture on Debian or Ubuntu, which ship apt"
        )
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise KernelNotFoundError(
            f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout.strip()}",
            hint=_APT_HINT,
        )
    return proc.stdout


def default_release(meta: str = DEFAULT_META) -> str:
    """The kernel release the distro's meta-package depends on now, e.g. ``6.1.0-56-amd64``.

    Resolved at run time so that the lab follows the archive as it moves on.
    """
    out = _run(["apt-cache", "depends", meta])
    match = re.search(r"Depends:\s+linux-image-(\S+)", out)
    if match is None:
        raise KernelNotFoundError(f"{meta} names no kernel image", hint=_APT_HINT)
    return match.group(1)


def versions(package: str) -> list[str]:
    """Every version of ``package`` the archive offers, newest first ([] when unknown)."""
    return madison([package]).get(package, [])


def madison(packages: list[str]) -> dict[str, list[str]]:
    """The versions of each of ``packages`` the archive offers, newest first, in one apt call.

    A package the archive does not have is missing from the result.
    """
    if not packages:
        return {}
    out = subprocess.run(
        ["apt-cache", "madison", *packages], capture_output=True, text=True, check=False
    ).stdout
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= 2 and parts[0] in packages:
            seen = found.setdefault(parts[0], [])
            if parts[1] not in seen:  # the same version from two suites is one version
                seen.append(parts[1])
    return found


def pkgnames(prefix: str) -> list[str]:
    """The names of the packages apt knows that start with ``prefix``, sorted."""
    return sorted(_run(["apt-cache", "pkgnames", prefix]).split())


def depends(package: str, version: str) -> list[str]:
    """The names ``package=version`` depends on (alternatives and versions dropped)."""
    out = _run(["apt-cache", "show", f"{package}={version}"])
    names: list[str] = []
    for line in out.splitlines():
        if line.startswith("Depends:"):
            for dep in line.removeprefix("Depends:").split(","):
                names.append(dep.split("|")[0].split("(")[0].strip())
            break
    return names


def sizes(specs: list[str]) -> int:
    """The bytes ``apt-get download`` of ``name=version`` packages fetches (0: unknown)."""
    proc = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", *specs],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        return 0
    return sum(int(line.split()[1]) for line in proc.stdout.splitlines()
               if line.startswith("Size: ") and line.split()[1].isdigit())  # fmt: skip


def download(specs: list[str], dest: Path) -> list[Path]:
    """Download ``name=version`` packages into ``dest``, logging bytes and percent as they come.

    Raises:
        DownloadError: apt-get failed (no network, or the version left the archive).
    """
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.glob("*.deb"))
    # APT::Sandbox::User=root: the cache folder may not be readable by _apt.
    argv = ["apt-get", "-o", "APT::Sandbox::User=root", "download", *specs]
    transfer = progress.Transfer(f"downloading {len(specs)} package(s)", sizes(specs))

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
