"""Is any thread inside, or due to return into, code that is about to be replaced?

Each stopped thread is checked in two ways:

- its instruction pointer: no thread may be executing a replaced range;
- its stack: the live part (from ``%rsp`` to the end of its mapping) is
  read, and every word that points into a replaced range counts (a return
  address, or the interrupted ``%rip`` a signal frame holds). Library code is built without
  frame pointers and frames of other modules would each need their own
  ``.eh_frame``; the scan needs neither, and is sound: it may see a stale
  word and say "busy" when the thread is not, but it never says "free" when
  a frame is there. A false "busy" only costs a retry.

The stack memory is read with one ``process_vm_readv`` per thread.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from suture.userspace import procfs
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
) -> list[Busy]:
    """The threads of ``pid`` that are inside or returning into any of ``ranges``.

    ``ranges`` are half-open ``[start, end)`` address ranges of code.
    ``mappings``: the process's maps read before the threads stopped (a
    stack does not move; one not among them is looked up again).
    """
    if not ranges:
        return []
    if mappings is None:
        mappings = procfs.maps(pid)
    found = []
    for tid in tids:
        regs = pt.get_regs(tid)
        hit = _inside(regs.rip, ranges)
        if hit:
            found.append(Busy(tid, regs.rip, "pc"))
            continue
        if procfs.mapping_at(mappings, regs.rsp) is None:  # a thread made since
            mappings = procfs.maps(pid)
        address = _scan_stack(pid, regs.rsp, mappings, ranges)
        if address:
            found.append(Busy(tid, address, "stack"))
    return found


def _inside(address: int, ranges: Sequence[tuple[int, int]]) -> bool:
    return any(lo <= address < hi for lo, hi in ranges)


def _scan_stack(
    pid: int, rsp: int, mappings: list[procfs.Mapping], ranges: Sequence[tuple[int, int]]
) -> int:
    """A return address into ``ranges`` on the live stack, or 0."""
    stack = procfs.mapping_at(mappings, rsp)
    if stack is None:
        return 0
    start = rsp & ~7
    data = pt.read_memory(pid, start, min(stack.end - start, _MAX_STACK))
    words = struct.unpack_from(f"<{len(data) // 8}Q", data)
    for lo, hi in ranges:
        # A return address may equal a range's end (a call as the last instruction).
        # No call-site filter: a signal frame holds an interrupted %rip that follows
        # no call, and it must count too.
        hits = [w for w in words if lo <= w <= hi]
        if hits:
            return int(hits[0])
    return 0
