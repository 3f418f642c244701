"""The cache's entries, their last use, and its size limit (least recently used out first).

The cache folder (``$SUTURE_CACHE``) holds two kinds of entry:

``build:<release>``
    everything of one kernel build: ``kernels/<release>/`` (image, headers,
    vmlinux), ``trees/<release>/`` (its prepared source tree, a hard-link farm
    of the shared source), ``kallsyms/<release>`` and
    ``initramfs/initramfs-<release>-<hash>.cpio``.
``source:<package>=<version>``
    ``sources/<package>=<version>/``: one source package unpacked, read-only,
    shared through hard links by the trees of every build made from it.
``buildroot:<name>``
    ``buildroots/<name>/``: a minimal system of a distro release holding the
    compiler of the builds made with it (suture.packages.buildroot).
``rootfs:<name>``
    ``rootfs/<name>/``: a distro's root file system that lab guests boot
    instead of the host's (suture.lab.rootfs).

``usage/<kind>/<name>.json`` records an entry's last use and
``usage/<kind>/<name>.lock`` is its lock. A process that uses an entry holds
that lock shared (:func:`pin`) until it exits; eviction takes it exclusive
without waiting, so an entry in use is never evicted, and a process about to
use an entry waits until its eviction is over (and then fetches it again).

``$SUTURE_CACHE_MAX`` (default 40G) bounds the cache: after something is added,
whole entries go, least recently used first, until it fits. A source goes
only when no build's tree was made from it. Sizes count hard links once, as
``du`` does.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from suture.errors import UsageError
from suture.fsutil import atomic_write, cache_dir, locked

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CACHE_MAX_ENV = "SUTURE_CACHE_MAX"
# 40 GiB holds every Debian 12 amd64 and cloud-amd64 build with its prepared
# tree (about 0.6 GB a build, 1.4 GB for the first source of a series).
DEFAULT_MAX = "40G"

BUILD = "build"
SOURCE = "source"
BUILDROOT = "buildroot"
ROOTFS = "rootfs"
KINDS = (BUILD, SOURCE, BUILDROOT, ROOTFS)


@dataclass(frozen=True)
class _Part:
    """Where a kind of entry keeps one of its parts."""

    folder: str  # under the cache folder
    kind: str
    pattern: str  # a child of the folder -> the entry's name (group 1); dot names are not entries


# In the order their parts are created; eviction removes them in reverse, so
# that an interrupted eviction leaves a build fetched but not prepared.
_PARTS = (
    _Part("sources", SOURCE, r"([^.].*)"),
    _Part("kernels", BUILD, r"([^.].*)"),
    _Part("source", BUILD, r"([^.].*)"),  # one prepared tree per build, before shared sources
    _Part("trees", BUILD, r"([^.].*)"),
    _Part("kallsyms", BUILD, r"([^.].*)"),
    _Part("initramfs", BUILD, r"initramfs-(.+)-[0-9a-f]{16}\.cpio"),
    _Part("buildroots", BUILDROOT, r"([^.].*)"),
    _Part("rootfs", ROOTFS, r"([^.].*)"),
)

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes in a size such as ``40G``, ``500M``, ``1.5T`` or ``123`` (powers of 1024).

    Raises:
        UsageError: not a size.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if m is None:
        raise UsageError(
            f"{text!r} is not a size", hint="write it as 40G, 500M or 1T (powers of 1024)"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def human(size: int) -> str:
    """``size`` bytes for people, in powers of 1024 like ``du -h``: ``1.2G``."""
    value = float(size)
    for unit in ("", "K", "M", "G"):
        if abs(value) < 1024:
            return f"{value:.0f}{unit}" if unit == "" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"


def limit() -> int:
    """The cache's size limit in bytes: ``$SUTURE_CACHE_MAX``, else 40G.

    Raises:
        UsageError: the variable holds no size.
    """
    text = os.environ.get(CACHE_MAX_ENV, DEFAULT_MAX)
    try:
        return parse_size(text)
    except UsageError as e:
        raise UsageError(f"{CACHE_MAX_ENV}={text!r} is not a size", hint=e.hint) from e


@dataclass(frozen=True)
class Entry:
    """One entry of the cache: a build's files, or a shared source."""

    kind: str  # one of KINDS
    name: str  # the release, package=version, or a build root's or root file system's name
    paths: tuple[Path, ...]  # its parts that exist
    last_used: float  # seconds since the epoch
    source: str = ""  # a build's tree: the shared source it was made from (package=version)

    @property
    def key(self) -> str:
        """``kind:name``, unique in the cache."""
        return f"{self.kind}:{self.name}"


def _usage_dir() -> Path:
    return cache_dir() / "usage"


def _check_name(kind: str, name: str) -> None:
    if kind not in KINDS or not name or "/" in name or name.startswith("."):
        raise ValueError(f"not a cache entry: {kind}:{name}")


def _lock_path(kind: str, name: str) -> Path:
    _check_name(kind, name)
    return _usage_dir() / kind / f"{name}.lock"


def _open_lock(kind: str, name: str) -> int:
    # Lock files are never removed: a process may hold one open while another
    # would create its replacement, and the two would not exclude each other.
    path = _lock_path(kind, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


# Lock file -> the descriptor holding it shared. By path, not by entry name:
# the same build in another cache folder is another entry.
_pins: dict[str, int] = {}


def pin(kind: str, name: str) -> None:
    """Mark an entry in use by this process until it exits or calls :func:`unpin`.

    Blocks while the entry is being evicted. Take it before looking the entry
    up, so that it cannot go between the look-up and the use.
    """
    key = str(_lock_path(kind, name))
    if key in _pins:
        return
    fd = _open_lock(kind, name)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except BaseException:
        os.close(fd)
        raise
    _pins[key] = fd


def unpin(kind: str, name: str) -> None:
    """This process no longer uses the entry (a long run that moves on to other builds)."""
    fd = _pins.pop(str(_lock_path(kind, name)), None)
    if fd is not None:
        os.close(fd)


def unpin_all() -> None:
    """This process uses no entry any more."""
    while _pins:
        os.close(_pins.popitem()[1])


@contextlib.contextmanager
def pinned(kind: str, name: str) -> Iterator[None]:
    """The entry is in use for the block (and after it, when it was pinned before)."""
    held = str(_lock_path(kind, name)) in _pins
    pin(kind, name)
    try:
        yield
    finally:
        if not held:
            unpin(kind, name)


def record_use(kind: str, name: str, when: float | None = None) -> None:
    """Note that the entry was used now (or at ``when``, seconds since the epoch)."""
    _check_name(kind, name)
    record = {
        "format": FORMAT_VERSION,
        "kind": kind,
        "name": name,
        "last_used": time.time() if when is None else when,
    }
    atomic_write(_usage_dir() / kind / f"{name}.json", json.dumps(record).encode())


def use(kind: str, name: str) -> None:
    """Pin the entry for this process and record its use."""
    pin(kind, name)
    record_use(kind, name)


def in_use(kind: str, name: str) -> bool:
    """Some process (this one included) has the entry pinned."""
    fd = _open_lock(kind, name)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def entries() -> list[Entry]:
    """Every entry in the cache, by kind and name."""
    root = cache_dir()
    parts: dict[tuple[str, str], list[Path]] = {}
    for part in _PARTS:
        try:
            children = sorted((root / part.folder).iterdir())
        except (FileNotFoundError, NotADirectoryError):
            continue
        for child in children:
            if m := re.fullmatch(part.pattern, child.name):
                parts.setdefault((part.kind, m.group(1)), []).append(child)
    return [
        Entry(kind, name, tuple(paths), _last_used(kind, name, paths), _tree_source(kind, name))
        for (kind, name), paths in sorted(parts.items())
    ]


def _last_used(kind: str, name: str, paths: list[Path]) -> float:
    try:
        data = json.loads((_usage_dir() / kind / f"{name}.json").read_text())
        return float(data["last_used"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    # No record (an older Suture filled the cache): the newest of its parts.
    times = []
    for p in paths:
        with contextlib.suppress(OSError):
            times.append(p.lstat().st_mtime)
    return max(times, default=0.0)


def _tree_source(kind: str, name: str) -> str:
    if kind != BUILD:
        return ""
    try:
        data = json.loads((cache_dir() / "trees" / name / "tree.json").read_text())
        return str(data.get("source", ""))
    except (OSError, ValueError, AttributeError):
        return ""


@dataclass
class Usage:
    """Disk use of the cache, hard links counted once (``du``'s count, in bytes)."""

    total: int = 0
    own: dict[str, int] = field(default_factory=dict)  # entry -> bytes only it holds
    shared: dict[str, int] = field(default_factory=dict)  # entry -> bytes it shares
    other: int = 0  # bytes of no entry: records, locks, downloads under way
    # Bytes held by several entries (or by an entry and something else, ""), and by which.
    links: list[tuple[int, frozenset[str]]] = field(default_factory=list)

    def freed(self, keys: set[str]) -> int:
        """Bytes that removing the entries ``keys`` gives back."""
        return sum(self.own.get(k, 0) for k in keys) + sum(
            size for size, holders in self.links if holders <= keys
        )


def measure(found: list[Entry]) -> Usage:
    """Walk the whole cache once and count what each entry holds."""
    owner = {str(p): e.key for e in found for p in e.paths}
    usage = Usage(own={e.key: 0 for e in found}, shared={e.key: 0 for e in found})
    multi: dict[tuple[int, int], tuple[int, set[str]]] = {}
    for key, st in _walk(str(cache_dir()), owner):
        size = st.st_blocks * 512
        if stat.S_ISDIR(st.st_mode) or st.st_nlink == 1:
            usage.total += size
            if key:
                usage.own[key] += size
            else:
                usage.other += size
            continue
        ino = (st.st_dev, st.st_ino)
        if ino not in multi:
            usage.total += size
            multi[ino] = (size, set())
        multi[ino][1].add(key)
    for size, holders in multi.values():
        if len(holders) == 1 and "" not in holders:
            usage.own[next(iter(holders))] += size
        elif holders == {""}:
            usage.other += size
        else:
            for key in holders - {""}:
                usage.shared[key] += size
            usage.links.append((size, frozenset(holders)))
    return usage


def _walk(top: str, owner: dict[str, str]) -> Iterator[tuple[str, os.stat_result]]:
    """Everything under ``top`` (itself included): the entry it belongs to ("" none), its lstat.

    Entries' parts are children of the cache's folders, ``<cache>/<folder>/<part>``:
    what is below a part is the part's entry's. Paths that vanish meanwhile are skipped.
    """
    stack = [(top, "", 0)]
    while stack:
        path, key, depth = stack.pop()
        if depth == 2:
            key = owner.get(path, "")
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        yield key, st
        if stat.S_ISDIR(st.st_mode):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(path) as it:
                stack.extend((e.path, key, depth + 1) for e in it)


@dataclass(frozen=True)
class PruneResult:
    """What a prune did."""

    limit: int
    before: int  # bytes
    after: int  # bytes
    evicted: tuple[str, ...]  # entry keys, in the order they went
    in_use: tuple[str, ...]  # entries that would have gone but were in use

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "limit": self.limit,
            "before": self.before,
            "after": self.after,
            "evicted": list(self.evicted),
            "in_use": list(self.in_use),
        }


def prune(max_bytes: int | None = None) -> PruneResult:
    """Evict whole entries, least recently used first, until the cache fits ``max_bytes``.

    ``max_bytes`` defaults to :func:`limit`. Entries in use are skipped, and a
    source goes only once no remaining build's tree was made from it.

    Raises:
        UsageError: ``$SUTURE_CACHE_MAX`` holds no size.
    """
    bound = limit() if max_bytes is None else max_bytes
    with locked(_usage_dir() / ".prune.lock"):
        _empty_trash()
        found = entries()
        usage = measure(found)
        size = usage.total
        gone: set[str] = set()
        busy: list[str] = []
        evicted: list[str] = []
        while size > bound:
            candidates = [
                e
                for e in found
                if e.key not in gone and e.key not in busy and not _needed(e, found, gone)
            ]
            if not candidates:
                break
            entry = min(candidates, key=lambda e: (e.last_used, e.key))
            if not _evict(entry):
                busy.append(entry.key)
                continue
            gone.add(entry.key)
            evicted.append(entry.key)
            size = usage.total - usage.freed(gone)
        if evicted:  # what is left, measured rather than reckoned
            size = measure(entries()).total
    return PruneResult(bound, usage.total, size, tuple(evicted), tuple(busy))


def _needed(entry: Entry, found: list[Entry], gone: set[str]) -> bool:
    """A source some remaining build's tree was made from."""
    return entry.kind == SOURCE and any(
        e.kind == BUILD and e.source == entry.name and e.key not in gone for e in found
    )


def _evict(entry: Entry) -> bool:
    """Remove the entry whole, unless it is in use (then False)."""
    fd = _open_lock(entry.kind, entry.name)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        # Each part leaves its place by one rename before anything is deleted:
        # an interrupted eviction leaves parts whole or gone, never half a tree
        # that looks complete. The trash is emptied now, or by the next prune.
        trash = cache_dir() / ".trash"
        trash.mkdir(exist_ok=True)
        order = {p.folder: i for i, p in enumerate(_PARTS)}
        for path in sorted(entry.paths, key=lambda p: order.get(p.parent.name, 0), reverse=True):
            with contextlib.suppress(FileNotFoundError):
                path.rename(trash / f"{entry.kind}-{uuid.uuid4().hex}")
        (_usage_dir() / entry.kind / f"{entry.name}.json").unlink(missing_ok=True)
        _empty_trash()
        return True
    finally:
        os.close(fd)


def _empty_trash() -> None:
    trash = cache_dir() / ".trash"
    with contextlib.suppress(FileNotFoundError):
        for child in trash.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def enforce() -> PruneResult | None:
    """Prune to the limit after something was added; say on stderr what went.

    Never fails the caller over the cache: an error while pruning is reported
    and the command goes on (None is returned).

    Raises:
        UsageError: ``$SUTURE_CACHE_MAX`` holds no size.
    """
    bound = limit()
    try:
        result = prune(bound)
    except OSError as e:
        log.warning("cache: pruning failed: %s", e)
        return None
    for key in result.evicted:
        log.info("cache: evicted %s (least recently used)", key)
    if result.after > bound:
        busy = f"; in use: {', '.join(result.in_use)}" if result.in_use else ""
        log.warning(
            "cache: %s is above %s=%s%s", human(result.after), CACHE_MAX_ENV, human(bound), busy
        )
    return result


def remove_stale(folder: Path) -> None:
    """Remove temporary folders (dot names) that an interrupted download left in ``folder``.

    Call it only while holding the lock under which that folder's downloads run.
    """
    with contextlib.suppress(FileNotFoundError):
        for child in folder.iterdir():
            if child.name.startswith(".") and child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
