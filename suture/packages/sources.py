"""Kernel source packages, unpacked once per version and shared read-only through hard links.

Layout under ``<cache>/sources/<package>=<version>/`` (e.g.
``linux-source-6.1=6.1.192-3``): ``source.json`` and ``linux/``, the
tarball's tree as Debian ships it (not configured). The folder appears whole
or not at all: it is filled under a temporary name and renamed into place.

The prepared tree of each build is a farm of hard links to one of these
(:func:`farm`), so no file of a tree may ever be written in place: whoever
changes one replaces it (a new file renamed over the name), which leaves the
shared inode alone. :func:`touched` finds a write that broke that rule.

Versions of one package share their identical files too: a version unpacked
while another is cached (the same upstream version preferred, e.g.
6.1.192-2 beside 6.1.192-3) has each file of the same path, mode and content
replaced by a hard link to the cached one's, so it costs only what differs.
"""

from __future__ import annotations

import filecmp
import json
import logging
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path

from suture import progress
from suture.errors import LabError, SourceGoneError
from suture.fsutil import atomic_write, cache_dir, locked
from suture.packages import cache, sets
from suture.packages.distro import KernelSeries, SourceRef

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def sources_dir() -> Path:
    """Where shared sources live."""
    return cache_dir() / "sources"


def spec(package: str, version: str) -> str:
    """``package=version``: the name of a shared source, as apt writes it."""
    return f"{package}={version}"


def cached(package: str, version: str) -> Path | None:
    """The unpacked tree of ``package=version``, or None when it is not (whole) in the cache."""
    entry = sources_dir() / spec(package, version)
    return entry / "linux" if (entry / "source.json").exists() else None


def ensure(package: str, version: str, release: str) -> Path:
    """The tree of ``package=version``, the exact source of ``release``: downloaded once.

    The tree is shared: read it, link to it, never write into it.

    Raises:
        SourceGoneError: the archive no longer has that version.
        DownloadError: downloading or unpacking failed; nothing is left behind.
    """
    name = spec(package, version)
    series = sets.series_for(release)
    ref = SourceRef(package, version)
    with cache.pinned(cache.SOURCE, name), locked(sources_dir() / ".lock"):
        tree = cached(package, version)
        if tree is None:
            if not series.offered_sources([ref]):
                raise SourceGoneError(release, package, version)
            cache.remove_stale(sources_dir())  # under the lock: no unpacking is under way
            tree = _unpack(series, ref)
        cache.record_use(cache.SOURCE, name)
    return tree


def _unpack(series: KernelSeries, ref: SourceRef) -> Path:
    package, version = ref.package, ref.version
    final = sources_dir() / ref.spec
    if final.exists():
        shutil.rmtree(final)  # no source.json: not whole
    with tempfile.TemporaryDirectory(prefix=".unpack.", dir=sources_dir()) as tmp:
        work = Path(tmp)
        tarball = series.fetch_source(ref, work / "download")
        log.info("unpacking %s (%s)", tarball.name, progress.human(tarball.stat().st_size))
        with (
            progress.heartbeat(f"unpacking {tarball.name}", measure=lambda: _count(work / "tree")),
            tarfile.open(tarball) as tar,
        ):
            tar.extractall(work / "tree", filter="data")
        (top,) = (work / "tree").iterdir()
        entry = work / "entry"
        entry.mkdir()
        top.rename(entry / "linux")
        shutil.rmtree(work / "download")
        record: dict[str, object] = {
            "format": FORMAT_VERSION,
            "package": package,
            "version": version,
        }
        if (reference := _reference(package, version)) is not None:
            log.info("linking files identical to %s", reference.parent.name)
            with progress.heartbeat(f"linking files identical to {reference.parent.name}"):
                files, size = link_identical(entry / "linux", reference)
            record["linked"] = {"from": reference.parent.name, "files": files, "bytes": size}
        atomic_write(entry / "source.json", json.dumps(record, indent=2).encode())
        entry.rename(final)
    return final / "linux"


def _count(folder: Path) -> str:
    """How many files are unpacked so far (a heartbeat's measure)."""
    return f"{sum(len(files) for _, _, files in os.walk(folder))} files"


def _reference(package: str, version: str) -> Path | None:
    """A cached tree of another version of ``package``: the same upstream version first."""
    upstream = version.rsplit("-", 1)[0]
    found = []
    for entry in sources_dir().glob(f"{package}=*"):
        other = entry.name.partition("=")[2]
        if other != version and (entry / "source.json").exists():
            found.append((other.rsplit("-", 1)[0] != upstream, -entry.stat().st_mtime, entry))
    return min(found)[2] / "linux" if found else None


def link_identical(tree: Path, reference: Path) -> tuple[int, int]:
    """Replace each file of ``tree`` that ``reference`` has identical by a hard link to it.

    Identical: the same relative path, a regular file in both, the same mode
    and the same bytes. Returns the number of files linked and the bytes
    this gives back.
    """
    files = size = 0
    for dirpath, _dirs, names in os.walk(tree):
        here = Path(dirpath)
        there = reference / here.relative_to(tree)
        for name in names:
            new, old = here / name, there / name
            try:
                a, b = new.lstat(), old.lstat()
            except FileNotFoundError:
                continue
            if (
                not (stat.S_ISREG(a.st_mode) and stat.S_ISREG(b.st_mode))
                or a.st_size != b.st_size
                or a.st_mode != b.st_mode
                or (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
                or not filecmp.cmp(new, old, shallow=False)
            ):
                continue
            # A new name first, renamed over the copy: the tree never lacks the file.
            tmp = new.with_name(f"{name}.suture-link")
            tmp.hardlink_to(old)
            tmp.replace(new)
            files += 1
            size += a.st_blocks * 512
    return files, size


def farm(source: Path, dest: Path) -> None:
    """Make ``dest`` a tree of hard links to the files of ``source`` (folders of its own).

    Raises:
        LabError: ``cp`` failed (the caller removes ``dest``).
    """
    proc = subprocess.run(
        ["cp", "-al", "--", str(source), str(dest)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise LabError(
            f"linking {dest} to {source} failed: {proc.stderr.strip()[-2000:]}",
            hint="the cache must be on one file system that has hard links",
        )


def touched(tree: Path, since: float) -> list[str]:
    """Files of a farm that share their inode with the source and were written after ``since``.

    Such a file was written in place through a hard link: the shared source
    changed under every tree made from it. Returns paths relative to ``tree``.
    """
    found = []
    for dirpath, _dirs, names in os.walk(tree):
        for name in names:
            path = Path(dirpath, name)
            st = path.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and st.st_mtime >= since:
                found.append(str(path.relative_to(tree)))
    return sorted(found)


def discard(package: str, version: str) -> None:
    """Mark a shared source as not whole (it was written into): it is unpacked again next time."""
    (sources_dir() / spec(package, version) / "source.json").unlink(missing_ok=True)
