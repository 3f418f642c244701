"""Distro kernels unpacked in the cache: image, modules and headers of one release.

Layout under ``<cache>/kernels/<release>/``::

    kernel.json          what was fetched (format version, release, package versions)
    root/boot/vmlinuz-<release>, root/boot/config-<release>
    root/lib/modules/<release>/kernel/...
    root/usr/src/linux-headers-<release>/    (kbuild tree for out-of-tree modules)

A release folder appears only when complete: it is filled under a temporary
name and renamed into place, so an interrupted fetch leaves nothing behind.
It is part of the cache entry ``build:<release>`` (suture.packages.cache).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from suture.errors import DownloadError, KernelNotFoundError
from suture.fsutil import atomic_write, cache_dir, locked
from suture.packages import apt, cache

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class KernelTree:
    """One fetched kernel release in the cache."""

    release: str
    version: str  # Debian package version of the image, e.g. 6.1.192-2
    root: Path

    @property
    def vmlinuz(self) -> Path:
        """The bootable image."""
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def vmlinux(self) -> Path:
        """The uncompressed ELF kernel, extracted from vmlinuz on first use."""
        return self.root.parent / "vmlinux"

    @property
    def config(self) -> Path:
        """The kernel's .config as shipped in the image package."""
        return self.root / "boot" / f"config-{self.release}"

    @property
    def modules_dir(self) -> Path:
        """``lib/modules/<release>`` of the image package."""
        return self.root / "lib" / "modules" / self.release

    @property
    def headers_dir(self) -> Path:
        """The kbuild tree: ``make -C <this> M=<dir> modules`` builds a module."""
        return self.root / "usr" / "src" / f"linux-headers-{self.release}"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready description."""
        return {
            "format": FORMAT_VERSION,
            "release": self.release,
            "version": self.version,
            "root": str(self.root),
            "vmlinuz": str(self.vmlinuz),
            "headers": str(self.headers_dir),
        }


def ensure_depmod(tree: KernelTree) -> None:
    """Write ``modules.dep`` for the image's modules (so modprobe works in a guest); best effort.

    The image package ships none: Debian's postinst runs depmod on install.
    """
    if (tree.modules_dir / "modules.dep").exists() or shutil.which("depmod") is None:
        return
    subprocess.run(["depmod", "-b", str(tree.root), tree.release], capture_output=True, check=False)


def kernels_dir() -> Path:
    """Where fetched kernels live."""
    return cache_dir() / "kernels"


def cached(release: str) -> KernelTree | None:
    """The fetched tree of ``release``, or None when it is not (completely) in the cache."""
    meta = kernels_dir() / release / "kernel.json"
    try:
        data = json.loads(meta.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return KernelTree(release=release, version=str(data["version"]), root=meta.parent / "root")


def resolve(release: str | None) -> str:
    """``release`` itself, or the distro's current default when None."""
    return release or apt.default_release()


def fetch(release: str | None = None) -> KernelTree:
    """Download and unpack ``linux-image``/``linux-headers`` of ``release`` into the cache.

    Safe to call again: a complete tree in the cache is returned as it is.
    The build stays pinned in the cache (never evicted) until this process
    exits or calls ``cache.unpin("build", release)``.

    Raises:
        KernelNotFoundError: the archive has no such kernel.
        DownloadError: downloading or unpacking failed; nothing is left in the cache.
    """
    release = resolve(release)
    # In use from here to the process's end: the cache never evicts it meanwhile.
    cache.pin(cache.BUILD, release)
    with locked(kernels_dir() / ".lock"):
        tree = cached(release)
        fetched = tree is None
        if tree is None:
            cache.remove_stale(kernels_dir())  # under the lock: no fetch is under way
            tree = _fetch_locked(release)
        cache.record_use(cache.BUILD, release)
    if fetched:
        cache.enforce()
    return tree


def _package_set(release: str) -> tuple[str, list[str]]:
    """The image version and the ``name=version`` specs that make up one release."""
    image = f"linux-image-{release}"
    found = apt.versions(image)
    if not found:
        raise KernelNotFoundError(
            f"the package archive has no {image}",
            hint="list the available builds with 'apt-cache search linux-image-6' "
            "or run 'apt-get update'",
        )
    version = found[0]
    headers = f"linux-headers-{release}"
    specs = [f"{image}={version}", f"{headers}={version}"]
    for dep in apt.depends(headers, version):
        if dep.endswith("-common"):
            specs.append(f"{dep}={version}")
        elif dep.startswith("linux-kbuild-"):
            # The kbuild tools of older builds leave the archive when a newer
            # point release lands; the newest one of the same series builds
            # modules for them all (it is what Debian installs alongside).
            kbuild = apt.versions(dep)
            specs.append(f"{dep}={version if version in kbuild else kbuild[0]}")
    return version, specs


def _fetch_locked(release: str) -> KernelTree:
    version, specs = _package_set(release)
    final = kernels_dir() / release
    log.info("fetching %s (%s) from the package archive", release, version)
    with tempfile.TemporaryDirectory(prefix=f".{release}.", dir=kernels_dir()) as tmp:
        work = Path(tmp)
        debs = apt.download(specs, work / "debs")
        if len(debs) != len(specs):
            raise DownloadError(
                f"expected {len(specs)} packages, got {len(debs)}",
                hint="run the command again; if it persists, run 'apt-get update'",
            )
        root = work / "root"
        for deb in debs:
            log.info("unpacking %s", deb.name)
            apt.unpack(deb, root)
        shutil.rmtree(work / "debs")
        _relocate_headers(root, release, final / "root")
        atomic_write(
            work / "kernel.json",
            json.dumps(
                {
                    "format": FORMAT_VERSION,
                    "release": release,
                    "version": version,
                    "packages": specs,
                },
                indent=2,
            ).encode(),
        )
        if final.exists():
            shutil.rmtree(final)  # an incomplete tree from an older Suture
        work.rename(final)
        # TemporaryDirectory cleans up a folder that is gone now; recreate it empty.
        work.mkdir()
    return KernelTree(release=release, version=version, root=final / "root")


def _relocate_headers(root: Path, release: str, installed_root: Path) -> None:
    """Point the arch headers' Makefile at the unpacked common headers.

    Debian's ``linux-headers-<release>/Makefile`` includes the common tree by
    its absolute installed path; everything else uses relative symlinks.
    ``installed_root`` is where ``root`` will be once renamed into place.
    """
    makefile = root / "usr" / "src" / f"linux-headers-{release}" / "Makefile"
    text = makefile.read_text()
    makefile.write_text(text.replace("include /usr/src/", f"include {installed_root}/usr/src/"))
