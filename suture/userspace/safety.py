"""Is any thread inside, or due to return into, code that is about to be replaced?

Each stopped thread is checked in two ways:

- its instruction pointer: no thread may be executing a replaced range;
- its stack: unwound frame by frame with each module's ``.eh_frame``
  (:mod:`suture.userspace.unwind`; signal frames included), every return
  address checked. Library code is built without frame pointers, so the
  call frame information is the way. A stack that cannot be unwound with
  certainty (JIT code, a module without CFI) is scanned instead: the live
  part (from ``%rsp`` to the end of its mapping) is read and every word that
  points into a replaced range counts. The scan is sound too, but a stale
  word makes it say "busy" when the thread is not, which costs a retry.

The stack memory is read with one ``process_vm_readv`` per thread.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from suture.userspace import procfs, unwind
from suture.userspace import ptrace as pt

_MAX_STACK = 8 << 20  # bytes read per thread at most (a default thread stack)


@dataclass(frozen=True)
class Busy:
    """A thread that is in a replaced range: where, and how it was seen."""

    tid: int
    address: int
    how: str  # "pc" or "stack"


def _follows_call(before: bytes) -> bool:
    """True when the 7 bytes before a return address end with a call instruction."""
    if len(before) < 7:
        return False
    if before[2] == 0xE8:  # call rel32
        return True
    # call *r/m: ff /2, with ModRM at the 2nd, 3rd, 6th or 7th last byte
    for at in (5, 4, 1, 0):
        if before[at] == 0xFF and (before[at + 1] >> 3) & 7 == 2:
            return True
    return before[5] == 0xFF and (before[6] >> 3) & 7 == 2


def busy_threads(
    pid: int,
    tids: Sequence[int],
    ranges: Sequence[tuple[int, int]],
    mappings: list[procfs.Mapping] | None = None,
    modules: unwind.Modules | None = None,
) -> list[Busy]:
    """The threads of ``pid`` that are inside or returning into any of ``ranges``.

    ``ranges`` are half-open ``[start, end)`` address ranges of code.
    ``mappings``: the process's maps read before the threads stopped (a
    stack does not move; one not among them is looked up again). With
    ``modules`` each stack is unwound (``.eh_frame``), and only a stack that
    cannot be unwound with certainty is scanned word by word.
    """
    if not ranges:
        return []
    if mappings is None:
        mappings = procfs.maps(pid)
    finder = modules.finder(pid, mappings) if modules is not None else None
    found = []
    for tid in tids:
        regs = pt.get_regs(tid)
        hit = _inside(regs.rip, ranges)
        if hit:
            found.append(Busy(tid, regs.rip, "pc"))
            continue
        if procfs.mapping_at(mappings, regs.rsp) is None:  # a thread made since
            mappings = procfs.maps(pid)
            finder = modules.finder(pid, mappings) if modules is not None else None
        stack = _read_stack(pid, regs.rsp, mappings)
        if finder is not None:
            try:
                chain = unwind.frames(pid, regs, finder, stack)
            except (unwind.Unwindable, pt.PtraceError, IndexError, struct.error, ValueError):
                pass  # scanned below
            else:
                caller = next((a for a in chain[1:] if _returns_into(a, ranges)), 0)
                if caller:
                    found.append(Busy(tid, caller, "frame"))
                continue
        address = _scan_stack(stack, ranges)
        if address:
            found.append(Busy(tid, address, "stack"))
    return found


def _returns_into(address: int, ranges: Sequence[tuple[int, int]]) -> bool:
    # A return address may equal a range's end (a call as the last instruction).
    return any(lo <= address <= hi for lo, hi in ranges)


def _inside(address: int, ranges: Sequence[tuple[int, int]]) -> bool:
    return any(lo <= address < hi for lo, hi in ranges)


def _read_stack(pid: int, rsp: int, mappings: list[procfs.Mapping]) -> tuple[int, bytes]:
    """The live part of the stack ``rsp`` is in: (address, bytes); empty when it is in none."""
    stack = procfs.mapping_at(mappings, rsp)
    start = rsp & ~7
    if stack is None:
        return start, b""
    return start, pt.read_memory(pid, start, min(stack.end - start, _MAX_STACK))


def _scan_stack(stack: tuple[int, bytes], ranges: Sequence[tuple[int, int]]) -> int:
    """A word of the live stack that points into ``ranges`` (a return address maybe), or 0."""
    _start, data = stack
    words = struct.unpack_from(f"<{len(data) // 8}Q", data)
    for lo, hi in ranges:
        # A return address may equal a range's end (a call as the last instruction).
        # No call-site filter: a signal frame holds an interrupted %rip that follows
        # no call, and it must count too.
        hits = [w for w in words if lo <= w <= hi]
        if hits:
            return int(hits[0])
    return 0
