"""Small file-system helpers shared by every role: cache location, atomic writes, locks."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

CACHE_ENV = "SUTURE_CACHE"


def cache_dir() -> Path:
    """The one folder for large downloads (kernel packages, source trees).

    ``$SUTURE_CACHE`` moves it; otherwise ``$XDG_CACHE_HOME/suture`` or
    ``~/.cache/suture``. Nothing may depend on it being filled already.
    """
    if env := os.environ.get(CACHE_ENV):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "suture"


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half.

    The temporary file sits in the same folder so that ``os.replace`` is a rename
    on one file system; it is fsynced before the rename and the folder after.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            # On the descriptor, never by name: in a folder another user can
            # write, the name may already point elsewhere (a symlink to a file
            # of root's), and chmod would follow it.
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def check_trusted_folder(folder: Path) -> None:
    """Refuse a folder that a user other than root (and us) could change under a root process.

    A process running as root that writes into such a folder can be made to
    write, or rename, where that user wants (symlink races). Only checked
    when running as root; the folder need not exist yet (its nearest existing
    parent is checked then).

    Raises:
        PermissionError: the folder is owned by another user, or writable by
            group or others without the sticky bit.
    """
    if os.geteuid() != 0:
        return
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    st = probe.stat()
    if st.st_uid not in (0, os.geteuid()):
        raise PermissionError(
            errno.EPERM, f"{probe} belongs to uid {st.st_uid}, not root", str(probe)
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        raise PermissionError(
            errno.EPERM, f"{probe} is writable by its group or by others", str(probe)
        )


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    """The sha256 of the file at ``path``, in hex."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
