"""Fault injection: make the n-th file write (or sysfs write) under a folder fail with an errno.

:func:`injected` patches the ways Python code opens files for writing and
commits them (``open``/``io.open`` in a writing mode, ``os.open`` with write
flags, ``os.replace``, ``os.rename``, ``os.mkdir``, ``os.unlink``), for paths
under ``root`` only: the agent's state folder, the fake /sys, the metrics
file all count, pytest's own files do not. Recording first, then failing each
recorded write in turn, covers every write a scenario makes, including the
TUF client's.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ERRNOS = (errno.EPERM, errno.EBUSY, errno.ENOSPC, errno.EROFS)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


@dataclass
class Injector:
    """Counts writes under ``root``; the ``fail_at``-th (0-based) raises ``OSError(errno)``."""

    root: Path
    fail_at: int | None = None
    errno: int = errno.EIO
    writes: list[str] = field(default_factory=list)  # "kind path" of each write, in order
    paused: int = 0  # > 0 while a fake kernel writes its own files (not the agent's)

    def check(self, kind: str, path: Any) -> None:
        if self.paused or isinstance(path, int):
            return
        try:
            full = Path(os.fsdecode(path)).absolute()
        except TypeError:
            return
        if not full.is_relative_to(self.root):
            return
        index = len(self.writes)
        self.writes.append(f"{kind} {full.relative_to(self.root)}")
        if index == self.fail_at:
            raise OSError(self.errno, os.strerror(self.errno), str(full))

    @contextlib.contextmanager
    def bypass(self) -> Iterator[None]:
        """Writes made by the fake kernel itself are not the agent's: not counted."""
        self.paused += 1
        try:
            yield
        finally:
            self.paused -= 1


def _writing(mode: str) -> bool:
    return any(c in mode for c in "wax+")


@contextlib.contextmanager
def injected(injector: Injector) -> Iterator[Injector]:
    """Route file writes through ``injector`` for the block."""
    real_open, real_os_open = builtins.open, os.open
    real = {name: getattr(os, name) for name in ("replace", "rename", "mkdir", "unlink")}

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if _writing(mode):
            injector.check("open", file)
        return real_open(file, mode, *args, **kwargs)

    def os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & _WRITE_FLAGS:
            injector.check("open", path)
        return real_os_open(path, flags, *args, **kwargs)

    def wrap(name: str) -> Any:
        def call(path: Any, *args: Any, **kwargs: Any) -> Any:
            # A real mkdir of an existing folder, or unlink of a missing file,
            # fails with EEXIST or ENOENT before anything else: not a write.
            exists = isinstance(path, int) or os.path.lexists(path)
            if (name == "mkdir" and not exists) or (name != "mkdir" and exists):
                injector.check(name, path)
            return real[name](path, *args, **kwargs)

        return call

    patches = {
        (builtins, "open"): open_,
        (io, "open"): open_,
        (os, "open"): os_open,
        **{(os, name): wrap(name) for name in real},
    }
    saved = {key: getattr(*key) for key in patches}
    try:
        for (module, name), value in patches.items():
            setattr(module, name, value)
        yield injector
    finally:
        for (module, name), value in saved.items():
            setattr(module, name, value)
