"""ptrace(2), waitpid(2) and process_vm_readv(2) through ctypes, for x86-64 Linux.

Only what the patcher needs: ``PTRACE_SEIZE`` (no SIGSTOP, so a patcher
that dies leaves no job-control stop behind: the kernel detaches its tracees
and they run on), ``PTRACE_INTERRUPT``, ``PTRACE_SYSCALL`` for the injected
system calls, registers, the XSAVE area and the signal mask of a thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from dataclasses import dataclass

# <linux/ptrace.h>
SEIZE = 0x4206
INTERRUPT = 0x4207
CONT = 7
SYSCALL = 24
DETACH = 17
GETREGS = 12
SETREGS = 13
GETREGSET = 0x4204
GETSIGMASK = 0x420A
O_TRACESYSGOOD = 1
EVENT_STOP = 128
NT_X86_XSTATE = 0x202
NT_PRSTATUS = 1
WALL = 0x40000000  # __WALL: threads too
SIGTRAP = 5

_REG_NAMES = [
    "r15",
    "r14",
    "r13",
    "r12",
    "rbp",
    "rbx",
    "r11",
    "r10",
    "r9",
    "r8",
    "rax",
    "rcx",
    "rdx",
    "rsi",
    "rdi",
    "orig_rax",
    "rip",
    "cs",
    "eflags",
    "rsp",
    "ss",
    "fs_base",
    "gs_base",
    "ds",
    "es",
    "fs",
    "gs",
]


class Regs(ctypes.Structure):
    """``struct user_regs_struct`` of x86-64 (sys/user.h)."""

    _fields_ = [(name, ctypes.c_ulonglong) for name in _REG_NAMES]

    def copy(self) -> Regs:
        """An independent copy."""
        out = Regs()
        ctypes.memmove(ctypes.byref(out), ctypes.byref(self), ctypes.sizeof(Regs))
        return out

    def values(self) -> tuple[int, ...]:
        """Every register, in the struct's order."""
        return tuple(getattr(self, n) for n in _REG_NAMES)


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_ptrace = _libc.ptrace
_ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_ptrace.restype = ctypes.c_long
_readv = _libc.process_vm_readv
_readv.argtypes = [
    ctypes.c_int, ctypes.POINTER(_Iovec), ctypes.c_ulong,
    ctypes.POINTER(_Iovec), ctypes.c_ulong, ctypes.c_ulong,
]  # fmt: skip
_readv.restype = ctypes.c_ssize_t


class PtraceError(OSError):
    """A ptrace request failed (``errno`` says why)."""


def _call(request: int, tid: int, addr: int = 0, data: object = None) -> int:
    ctypes.set_errno(0)
    result = _ptrace(request, tid, ctypes.c_void_p(addr), data)
    err = ctypes.get_errno()
    if result == -1 and err:
        raise PtraceError(err, f"ptrace({request:#x}, {tid}): {os.strerror(err)}")
    return int(result)


def seize(tid: int) -> None:
    """Trace ``tid`` without stopping it; syscall stops are reported as SIGTRAP|0x80."""
    _call(SEIZE, tid, 0, ctypes.c_void_p(O_TRACESYSGOOD))


def interrupt(tid: int) -> None:
    """Ask a seized thread to stop (it reports a ``PTRACE_EVENT_STOP``)."""
    _call(INTERRUPT, tid)


def cont(tid: int, sig: int = 0) -> None:
    """Resume a stopped thread, delivering ``sig`` (0: none)."""
    _call(CONT, tid, 0, ctypes.c_void_p(sig))


def syscall(tid: int, sig: int = 0) -> None:
    """Resume until the next system call entry or exit."""
    _call(SYSCALL, tid, 0, ctypes.c_void_p(sig))


def detach(tid: int, sig: int = 0) -> None:
    """Let the thread go; it runs on from where it was stopped."""
    _call(DETACH, tid, 0, ctypes.c_void_p(sig))


def get_regs(tid: int) -> Regs:
    """The thread's general registers."""
    regs = Regs()
    _call(GETREGS, tid, 0, ctypes.byref(regs))
    return regs


def set_regs(tid: int, regs: Regs) -> None:
    """Replace the thread's general registers."""
    _call(SETREGS, tid, 0, ctypes.byref(regs))


def get_xstate(tid: int, size: int = 16384) -> bytes:
    """The thread's XSAVE area as ``PTRACE_GETREGSET(NT_X86_XSTATE)`` gives it."""
    buf = ctypes.create_string_buffer(size)
    iov = _Iovec(ctypes.cast(buf, ctypes.c_void_p), size)
    _call(GETREGSET, tid, NT_X86_XSTATE, ctypes.byref(iov))
    return buf.raw[: iov.len]


def get_sigmask(tid: int) -> int:
    """The thread's blocked signals (a 64-bit kernel sigset)."""
    mask = ctypes.c_uint64()
    _call(GETSIGMASK, tid, 8, ctypes.byref(mask))
    return mask.value


@dataclass(frozen=True)
class Stop:
    """What ``waitpid`` said about one thread."""

    tid: int
    status: int

    @property
    def exited(self) -> bool:
        """The thread is gone."""
        return os.WIFEXITED(self.status) or os.WIFSIGNALED(self.status)

    @property
    def signal(self) -> int:
        """The stop signal (with 0x80 for a syscall stop); 0 when not stopped."""
        return os.WSTOPSIG(self.status) if os.WIFSTOPPED(self.status) else 0

    @property
    def event(self) -> int:
        """The ``PTRACE_EVENT_*`` of the stop (0: none)."""
        return (self.status >> 16) & 0xFF

    @property
    def is_syscall(self) -> bool:
        """A syscall-enter or syscall-exit stop."""
        return self.signal == (SIGTRAP | 0x80)

    @property
    def is_interrupt(self) -> bool:
        """The stop ``PTRACE_INTERRUPT`` (or a group stop) produced."""
        return self.event == EVENT_STOP


def wait(tid: int, *, block: bool = True) -> Stop | None:
    """Wait for a state change of ``tid``; None when ``block`` is false and none is pending."""
    try:
        pid, status = os.waitpid(tid, WALL | (0 if block else os.WNOHANG))
    except ChildProcessError as e:
        raise PtraceError(errno.ECHILD, f"waitpid({tid}): not traced") from e
    if pid == 0:
        return None
    return Stop(tid, status)


def read_memory(pid: int, address: int, size: int) -> bytes:
    """``size`` bytes of the process's memory (short when a page is not mapped)."""
    buf = ctypes.create_string_buffer(size)
    local = _Iovec(ctypes.cast(buf, ctypes.c_void_p), size)
    remote = _Iovec(ctypes.c_void_p(address), size)
    got = _readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if got < 0:
        err = ctypes.get_errno()
        raise PtraceError(err, f"process_vm_readv({pid}, {address:#x}): {os.strerror(err)}")
    return buf.raw[:got]


_sigmask = _libc.pthread_sigmask
_sigmask.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
_SIG_BLOCK, _SIG_SETMASK = 0, 2
_SIGSET_BYTES = 128  # glibc's sigset_t


def block_signals() -> bytes:
    """Block every catchable signal of the calling thread; return the mask before.

    For :func:`restore_signals`. The ``signal`` module's version turns the
    answer into a set of enums, which costs more than the writes it protects.
    """
    full = ctypes.create_string_buffer(b"\xff" * _SIGSET_BYTES, _SIGSET_BYTES)
    old = ctypes.create_string_buffer(_SIGSET_BYTES)
    _sigmask(_SIG_BLOCK, full, old)  # SIGKILL and SIGSTOP stay deliverable: the kernel says so
    return old.raw


def restore_signals(old: bytes) -> None:
    """Put back the mask :func:`block_signals` returned."""
    _sigmask(_SIG_SETMASK, ctypes.create_string_buffer(old, _SIGSET_BYTES), None)
