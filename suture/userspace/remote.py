"""Run one system call (mmap, mprotect, munmap) inside a stopped thread of another process.

No byte of the target's code is changed, and the thread puts its own
registers back: a patcher killed at any instant leaves it running as before.

How: the thread's registers (its interrupted system call wound back so that
it restarts, as the kernel would do), signal mask and XSAVE area are written
below its stack's red zone as an ``rt_sigframe``. Its registers are then set
to the system call's, with the instruction pointer on a ``syscall; ret``
sequence of libc and the stack pointer on the frame, whose first word is
the address of libc's ``__restore_rt`` (``mov $15, %rax; syscall``). The
thread makes the call; at its exit stop the patcher reads the result and
sets the registers back itself (two ptrace stops per call in all). Should
the patcher die before that, the thread runs on alone: it returns into
``rt_sigreturn`` and the kernel restores everything from the frame (the
only trace left is the mapping the call made).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from suture.errors import UserspaceError
from suture.userspace import procfs
from suture.userspace import ptrace as pt

NR_MMAP, NR_MPROTECT, NR_MUNMAP, NR_RT_SIGRETURN, NR_RESTART = 9, 10, 11, 15, 219
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_PRIVATE, MAP_ANONYMOUS, MAP_FIXED_NOREPLACE = 0x02, 0x20, 0x100000

_SYSCALL_RET = b"\x0f\x05\xc3"  # syscall; ret
_RESTORE_RT = b"\x48\xc7\xc0\x0f\x00\x00\x00\x0f\x05"  # mov $15, %rax; syscall
_RED_ZONE = 128  # bytes below %rsp a leaf function may use (x86-64 ABI)
_FP_MAGIC1, _FP_MAGIC2 = 0x46505853, 0x46505845  # arch/x86/include/uapi/asm/sigcontext.h
_XTILE_DATA, _XTILE_DATA_SIZE = 1 << 18, 8192  # AMX tile data: XCR0 bit, bytes (the last one)
_UC_FP_XSTATE, _UC_SIGCONTEXT_SS = 1, 2
_SS_INVALID = 3  # an ss_flags mode do_sigaltstack refuses: the thread's altstack stays as is
_FPSTATE_AT = 448  # 8 (pretcode) + 304 (ucontext) + 128 (siginfo), rounded up to 64
# Codes a system call interrupted by ptrace returns; the kernel restarts it on resume.
_RESTART = {-512, -513, -514}
_RESTART_BLOCK = -516
_SIGCONTEXT = [
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
    "rdi",
    "rsi",
    "rbp",
    "rbx",
    "rdx",
    "rax",
    "rcx",
    "rsp",
    "rip",
    "eflags",
]


@dataclass(frozen=True)
class Gadgets:
    """Addresses, in one process, of the two instruction sequences the injection borrows."""

    syscall_ret: int
    restore_rt: int


def find_gadgets(lib: procfs.MappedLibrary, cache: dict[str, tuple[int, int]]) -> Gadgets:
    """The gadgets in ``lib`` (libc), found once per build and cached as offsets.

    Raises:
        UserspaceError: the library holds neither sequence.
    """
    offsets = cache.get(lib.build_id)
    if offsets is None:
        vaddr, code = procfs.executable_segment(lib.link)
        a, b = code.find(_SYSCALL_RET), code.find(_RESTORE_RT)
        if a < 0 or b < 0:
            raise UserspaceError(
                f"{lib.path} has no 'syscall; ret' or no __restore_rt sequence",
                hint="this libc cannot be used to run the injected system calls",
            )
        offsets = (vaddr + a, vaddr + b)
        cache[lib.build_id] = offsets
    return Gadgets(lib.base + offsets[0], lib.base + offsets[1])


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def resumable(regs: pt.Regs) -> pt.Regs:
    """The registers the thread will resume with: an interrupted system call wound back.

    A thread stopped inside a blocking call (read, futex, poll) shows the
    kernel's internal ``-ERESTART*`` code; on resume the kernel sets %rax
    back to the call number and steps %rip back over the ``syscall``. The
    restored frame must do the same, or the caller would see that code.
    """
    out = regs.copy()
    if _signed(regs.orig_rax) < 0:
        return out
    code = _signed(regs.rax)
    if code in _RESTART:
        out.rax, out.rip = regs.orig_rax, regs.rip - 2
    elif code == _RESTART_BLOCK:
        out.rax, out.rip = NR_RESTART, regs.rip - 2
    return out


def signal_xstate(xstate: bytes) -> bytes:
    """The XSAVE area as a signal frame carries it, from the form ptrace gives.

    ptrace puts XCR0 in the FXSAVE area's software-reserved words; a signal
    frame wants the ``_fpx_sw_bytes`` header there and ``FP_XSTATE_MAGIC2``
    after the area. AMX tile data (XCR0 bit 18) is a dynamic feature that a
    task's signal frames leave out unless it asked for it: it is dropped,
    and a thread using it is not borrowed.

    Raises:
        UserspaceError: the thread holds AMX tile data.
    """
    (xcr0,) = struct.unpack_from("<Q", xstate, 464)
    (in_use,) = struct.unpack_from("<Q", xstate, 512)
    size = len(xstate)
    if xcr0 & _XTILE_DATA:
        if in_use & _XTILE_DATA:
            raise UserspaceError("the thread holds AMX tile state")
        size -= _XTILE_DATA_SIZE
    out = bytearray(xstate[:size])
    struct.pack_into("<IIQI", out, 464, _FP_MAGIC1, size + 4, xcr0 & ~_XTILE_DATA, size)
    return bytes(out) + struct.pack("<I", _FP_MAGIC2)


def sigframe(saved: pt.Regs, xstate: bytes, sigmask: int, restore_rt: int) -> bytes:
    """An ``rt_sigframe`` that restores ``saved`` exactly (fpstate at offset 448).

    Raises:
        UserspaceError: the XSAVE area cannot be carried (see :func:`signal_xstate`).
    """
    gregs = struct.pack("<18Q", *(getattr(saved, n) for n in _SIGCONTEXT))
    segs = struct.pack("<HHHH", saved.cs, 0, 0, saved.ss)
    mcontext = gregs + segs + struct.pack("<4Q", 0, 0, 0, 0)
    uc_head = struct.pack("<QQQiIQ", _UC_FP_XSTATE | _UC_SIGCONTEXT_SS, 0, 0, _SS_INVALID, 0, 0)
    head = struct.pack("<Q", restore_rt) + uc_head
    # The fpstate pointer (zero here) is set by the caller once the frame's address is known.
    ucontext_tail = b"\0" * 8 + bytes(64) + struct.pack("<Q", sigmask)
    pad = bytes(_FPSTATE_AT - len(head) - len(mcontext) - len(ucontext_tail))
    return head + mcontext + ucontext_tail + pad + signal_xstate(xstate)


_FPSTATE_POINTER_AT = 8 + 40 + 152 + 32  # pretcode + uc head + gregs/segs + err..cr2


class Injector:
    """System calls in one stopped process, through one of its threads."""

    def __init__(
        self,
        pid: int,
        tid: int,
        gadgets: Gadgets,
        mem: int,
        mappings: list[procfs.Mapping] | None = None,
    ) -> None:
        self.pid = pid
        self.tid = tid
        self.gadgets = gadgets
        self.mem = mem  # an fd on /proc/PID/mem
        # The process's maps, read before the stop: a stack does not move, and
        # reading /proc/PID/maps while the thread waits is the slowest step.
        self.mappings = mappings if mappings is not None else procfs.maps(pid)

    def call(self, nr: int, *args: int) -> int:
        """Make system call ``nr`` in the thread; its result (negative: -errno).

        Raises:
            UserspaceError: the thread's stack has no room, or it did not behave.
            pt.PtraceError: the thread vanished.
        """
        regs = pt.get_regs(self.tid)
        saved = resumable(regs)
        frame = bytearray(sigframe(saved, pt.get_xstate(self.tid), pt.get_sigmask(self.tid),
                                   self.gadgets.restore_rt))  # fmt: skip
        at = (saved.rsp - _RED_ZONE - len(frame) - 64) & ~63
        stack = procfs.mapping_at(self.mappings, saved.rsp)
        if stack is None:  # a stack made since the maps were read
            self.mappings = procfs.maps(self.pid)
            stack = procfs.mapping_at(self.mappings, saved.rsp)
        if stack is None or at < stack.start:
            raise UserspaceError(f"thread {self.tid} has no room on its stack for the call")
        struct.pack_into("<Q", frame, _FPSTATE_POINTER_AT, at + _FPSTATE_AT)
        os.pwrite(self.mem, bytes(frame), at)
        hijack = saved.copy()
        hijack.rip, hijack.rsp, hijack.rax = self.gadgets.syscall_ret, at, nr
        hijack.orig_rax = (1 << 64) - 1  # no restart handling of the stop we leave
        for name, value in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args, strict=False):
            setattr(hijack, name, value & ((1 << 64) - 1))
        pt.set_regs(self.tid, hijack)
        self._step(nr)  # entry
        result = _signed(self._step(nr).rax)  # exit
        # Back where it was, set by the patcher at the exit stop: two stops fewer
        # than through rt_sigreturn, and an interrupted sleep's restart block
        # survives (rt_sigreturn would turn its restart into EINTR). Until this
        # write the frame is the way back, should the patcher die.
        saved.orig_rax = (1 << 64) - 1  # the restart is already wound into rax and rip
        pt.set_regs(self.tid, saved)
        return result

    def _step(self, nr: int | None) -> pt.Regs:
        """Run to the next syscall stop (of ``nr``), passing on signals that arrive meanwhile."""
        pt.syscall(self.tid)
        while True:
            stop = pt.wait(self.tid)
            if stop is None or stop.exited:
                raise UserspaceError(f"thread {self.tid} exited during an injected call")
            if stop.is_syscall:
                regs = pt.get_regs(self.tid)
                if nr is not None and regs.orig_rax != nr:
                    raise UserspaceError(
                        f"thread {self.tid} stopped in system call {regs.orig_rax}, not {nr}"
                    )
                return regs
            # A signal arrived: deliver it (its handler runs below our frame) and go on.
            sig = 0 if stop.is_interrupt else stop.signal
            pt.syscall(self.tid, sig)

    def mmap(self, near: int, size: int, prot: int) -> int:
        """A private anonymous mapping at ``near`` exactly (never replacing one); its address."""
        flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE
        addr = self.call(NR_MMAP, near, size, prot, flags, (1 << 64) - 1, 0)
        if addr < 0 or addr != near:
            raise UserspaceError(f"mmap in process {self.pid} failed: {os.strerror(-addr)}"
                                 if addr < 0 else f"mmap in process {self.pid} moved")  # fmt: skip
        return addr

    def mprotect(self, addr: int, size: int, prot: int) -> None:
        """Change protections in the target."""
        result = self.call(NR_MPROTECT, addr, size, prot)
        if result < 0:
            raise UserspaceError(f"mprotect in process {self.pid} failed: {os.strerror(-result)}")

    def munmap(self, addr: int, size: int) -> None:
        """Unmap memory in the target."""
        result = self.call(NR_MUNMAP, addr, size)
        if result < 0:
            raise UserspaceError(f"munmap in process {self.pid} failed: {os.strerror(-result)}")


def open_mem(pid: int) -> int:
    """An fd on ``/proc/PID/mem``, for reads and writes (writes reach read-only text too)."""
    return os.open(Path("/proc") / str(pid) / "mem", os.O_RDWR | os.O_CLOEXEC)
