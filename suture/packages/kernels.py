"""Distro kernels unpacked in the cache: image, modules and headers of one release.

Layout under ``<cache>/kernels/<release>/``::

    kernel.json          what was fetched (format version, release, package versions)
    root/boot/vmlinuz-<release>, root/boot/config-<release>
    root/lib/modules/<release>/kernel/...
    root/usr/src/linux-headers-<release>/    (kbuild tree for out-of-tree modules)

as the distro lays them out: Debian 13 puts the modules in
``usr/lib/modules/<release>/``, and its 7.x builds also the image and the
config (``usr/lib/modules/<release>/vmlinuz``, ``.../config``). The series
of the release (suture.packages.sets, a :class:`~suture.packages.distro.KernelSeries`)
says what to download.

A release folder appears only when complete: it is filled under a temporary
name and renamed into place, so an interrupted fetch leaves nothing behind.
It is part of the cache entry ``build:<release>`` (suture.packages.cache).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from suture.fsutil import atomic_write, cache_dir, locked
from suture.packages import cache, sets

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class KernelTree:
    """One fetched kernel release in the cache."""

    release: str
    version: str  # Debian package version of the image, e.g. 6.1.192-2
    root: Path

    def _first(self, *candidates: str) -> Path:
        """The first of ``candidates`` (paths under the root) that exists, else the first."""
        paths = [self.root / c for c in candidates]
        return next((p for p in paths if p.exists()), paths[0])

    @property
    def vmlinuz(self) -> Path:
        """The bootable image."""
        return self._first(
            f"boot/vmlinuz-{self.release}",
            f"usr/lib/modules/{self.release}/vmlinuz",
            f"lib/modules/{self.release}/vmlinuz",
        )

    @property
    def vmlinux(self) -> Path:
        """The uncompressed ELF kernel, extracted from vmlinuz on first use."""
        return self.root.parent / "vmlinux"

    @property
    def config(self) -> Path:
        """The kernel's .config as shipped in the image package."""
        return self._first(
            f"boot/config-{self.release}",
            f"usr/lib/modules/{self.release}/config",
            f"lib/modules/{self.release}/config",
        )

    @property
    def modules_dir(self) -> Path:
        """``lib/modules/<release>`` (or ``usr/lib/...``) of the image package."""
        return self._first(f"lib/modules/{self.release}", f"usr/lib/modules/{self.release}")

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
    depmod reads ``<base>/lib/modules/<release>``: the base is the root for 6.1's
    packages, and ``usr`` for Debian 13's (merged /usr: ``usr/lib/modules``).
    """
    if (tree.modules_dir / "modules.dep").exists() or shutil.which("depmod") is None:
        return
    base = tree.modules_dir.parents[2]
    subprocess.run(["depmod", "-b", str(base), tree.release], capture_output=True, check=False)


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
    return release or sets.default_release()


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
        else:
            # Idempotent, and a kernel an older Suture fetched gets the 7.x relocation too.
            _relocate_headers(tree.root, release, tree.root)
        cache.record_use(cache.BUILD, release)
    if fetched:
        cache.enforce()
    return tree


def _fetch_locked(release: str) -> KernelTree:
    series = sets.series_for(release)
    final = kernels_dir() / release
    log.info("fetching %s from the package archive", release)
    with tempfile.TemporaryDirectory(prefix=f".{release}.", dir=kernels_dir()) as tmp:
        work = Path(tmp)
        root = work / "root"
        fetched = series.fetch_kernel(release, root)
        _relocate_headers(root, release, final / "root")
        atomic_write(
            work / "kernel.json",
            json.dumps(
                {
                    "format": FORMAT_VERSION,
                    "release": release,
                    "version": fetched.version,
                    "series": series.name,
                    "packages": list(fetched.packages),
                },
                indent=2,
            ).encode(),
        )
        for child in work.iterdir():  # what the download left beside the root
            if child.name not in ("root", "kernel.json"):
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        if final.exists():
            shutil.rmtree(final)  # an incomplete tree from an older Suture
        work.rename(final)
        # TemporaryDirectory cleans up a folder that is gone now; recreate it empty.
        work.mkdir()
    return KernelTree(release=release, version=fetched.version, root=final / "root")


def _relocate_headers(root: Path, release: str, installed_root: Path) -> None:
    """Point the arch headers' Makefile at the unpacked headers instead of ``/usr/src``.

    Debian's ``linux-headers-<release>/Makefile`` names the common tree by
    its absolute installed path (``include /usr/src/...``), and from 7.x its
    own folder too (``KBUILD_OUTPUT=/usr/src/...``); everything else uses
    relative symlinks. ``installed_root`` is where ``root`` will be once
    renamed into place. Paths already relocated are left as they are.
    """
    makefile = root / "usr" / "src" / f"linux-headers-{release}" / "Makefile"
    if not makefile.exists():
        return
    text = makefile.read_text()
    makefile.write_text(relocated(text, installed_root))


def relocated(makefile_text: str, installed_root: Path) -> str:
    """``makefile_text`` with each absolute ``/usr/src/`` (after a blank or ``=``) moved."""
    return re.sub(r"(?<=[\s=])/usr/src/", f"{installed_root}/usr/src/", makefile_text)
