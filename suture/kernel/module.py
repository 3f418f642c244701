"""Load and remove kernel modules with the kernel's own system calls.

``finit_module(2)`` and ``delete_module(2)`` are called directly (through
ctypes, which is in the standard library) so that the kernel's errno comes
back to us and turns into a message that says what to do, instead of going
through kmod's tools and parsing their text.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from pathlib import Path

from suture.errors import LoadError

# System call numbers per machine (arch/*/entry/syscalls tables).
_SYSCALLS = {
    "x86_64": {"finit_module": 313, "delete_module": 176},
    "aarch64": {"finit_module": 273, "delete_module": 106},
}

# What the kernel's refusals mean for an operator.
_LOAD_HINTS = {
    errno.EEXIST: "a module of that name is loaded already: see 'suture status'",
    errno.ENOEXEC: "the module was not built for this kernel: rebuild it against this build",
    errno.EKEYREJECTED: "the kernel wants modules signed with a key it trusts: sign the module",
    errno.EPERM: "run as root; under lockdown the module must also be signed",
    errno.EBUSY: "another ftrace user (kprobe, tracer, live patch) holds a patched function",
    errno.EINVAL: "the kernel refused the live patch: see 'dmesg' for its reason",
    errno.ENOENT: "a symbol the patch needs is not in this kernel: see 'dmesg'",
    # A Suture patch's pre-match check: a function is not the code it was built for.
    errno.EILSEQ: "a function to replace is not the code the patch was built for: see 'dmesg'",
}


def _syscall(name: str, *args: object) -> None:
    numbers = _SYSCALLS.get(os.uname().machine)
    if numbers is None:
        raise LoadError(f"loading modules is not supported on {os.uname().machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(numbers[name], *args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def load(path: Path, params: str = "") -> None:
    """Load the module file at ``path`` (``finit_module``); its init runs before we return.

    Raises:
        LoadError: the kernel refused; nothing is loaded.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise LoadError(f"cannot open {path}: {e.strerror}", hint="check the path") from e
    try:
        _syscall("finit_module", fd, params.encode(), 0)
    except OSError as e:
        refused = LoadError(
            f"the kernel refused to load {path.name}: {e.strerror}",
            hint=_LOAD_HINTS.get(e.errno or 0, "see 'dmesg' for the kernel's reason"),
        )
        refused.errno = e.errno or 0
        raise refused from e
    finally:
        os.close(fd)


def unload(name: str, timeout: float = 5.0) -> None:
    """Remove the loaded module ``name`` (``delete_module``), waiting while it is busy.

    A disabled live patch is freed by a work item a moment after its
    transition ends, so "busy" right after a disable is retried.

    Raises:
        LoadError: the module is not loaded, or stays in use past ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            _syscall("delete_module", name.encode(), os.O_NONBLOCK)
        except OSError as e:
            if e.errno in (errno.EBUSY, errno.EAGAIN) and time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            raise LoadError(
                f"cannot remove module {name}: {e.strerror}",
                hint="a live patch must be disabled before its module can go: 'suture unload'",
            ) from e
        else:
            return


def is_loaded(name: str, sysroot: Path = Path("/")) -> bool:
    """True when ``/sys/module/<name>`` exists for a loadable module."""
    return (sysroot / "sys/module" / name / "initstate").exists()


def kept(name: str, sysroot: Path = Path("/")) -> bool:
    """True when live patch module ``name`` keeps itself loaded for good.

    A Suture patch that stored pointers to its own code in the kernel (or
    handed out its data) holds a reference on itself and says so in its
    ``kept`` parameter: nothing can tell when the last user of such a
    pointer is done, so the module is never removed (docs/adr/0010).
    """
    try:
        return (sysroot / "sys/module" / name / "parameters/kept").read_text().strip() == "Y"
    except OSError:
        return False


def taint(name: str, sysroot: Path = Path("/")) -> str:
    """The taint letters of a loaded module (``K`` marks a live patch)."""
    try:
        return (sysroot / "sys/module" / name / "taint").read_text().strip()
    except OSError:
        return ""


PREMATCH_PARAMETER = "prematch"  # written by a Suture patch's pre-match check


def prematch_refused(name: str, sysroot: Path = Path("/")) -> tuple[str, ...]:
    """``object:function`` entries a loaded Suture patch refused as not its code (none: ``()``).

    A patch whose check refused a module as it loaded stays loaded for the
    rest; the module was not loaded. The patch says which function in
    ``/sys/module/<name>/parameters/prematch``.
    """
    try:
        text = (sysroot / "sys/module" / name / "parameters" / PREMATCH_PARAMETER).read_text()
    except OSError:
        return ()
    return tuple(text.split())
