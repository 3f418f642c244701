"""The kernel's log as it is written (``/dev/kmsg``): the lines since a moment, read back.

A refusal inside the kernel (a live patch's pre-match check) gives user
space an errno only; the kernel log says which function. :class:`KernelLog`
is opened before the action and read after it: ``/dev/kmsg`` seeks to the
end (SEEK_END means "after the last record"), and each read returns one
record, ``priority,sequence,microseconds,flags;message``. Reading needs
CAP_SYSLOG where ``dmesg_restrict`` is set; without it, nothing is read and
the caller says less.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

KMSG = "dev/kmsg"
MAX_RECORD = 8192  # bytes; a record is at most about 1 KiB (PRINTK_MESSAGE_MAX)


class KernelLog:
    """The kernel log from the moment this was opened; empty when it cannot be read."""

    def __init__(self, sysroot: Path = Path("/")) -> None:
        self._fd: int | None = None
        try:
            self._fd = os.open(sysroot / KMSG, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self._fd, 0, os.SEEK_END)
        except OSError:
            self.close()

    def close(self) -> None:
        """Stop reading."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def lines(self) -> list[str]:
        """The messages written since it was opened (or last read), oldest first."""
        found: list[str] = []
        while self._fd is not None:
            try:
                record = os.read(self._fd, MAX_RECORD)
            except OSError as e:
                if e.errno == errno.EPIPE:  # records were overwritten meanwhile: go on
                    continue
                break  # EAGAIN: nothing more now (or the log cannot be read)
            if not record:
                break
            _, _, message = record.decode("utf-8", "replace").partition(";")
            found.append(message.split("\n", 1)[0])
        return found


@contextlib.contextmanager
def watching(sysroot: Path = Path("/")) -> Iterator[KernelLog]:
    """The kernel log from now, for the block."""
    log = KernelLog(sysroot)
    try:
        yield log
    finally:
        log.close()
