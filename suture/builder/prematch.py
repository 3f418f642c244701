"""Pre-match: the bytes each replaced function must have in the kernel, and what may differ.

A live patch replaces functions by name. If the running kernel's function is
not the code the patch was built against (another build slipped through,
a module from elsewhere, code changed in memory), the patch's new code may
not fit the old one's callers. So the generated module carries, for each
function it redirects, the function's code as the build compiled it and a
mask of the bytes that legitimately differ in memory, and checks them in its
pre-patch callback, inside the kernel, before any task is switched: for
vmlinux when the patch loads, for a module as that module loads. It works
under lockdown, where no user space tool can read kernel text.

The masked bytes are those the linker, the module loader or the kernel at
boot fill in or rewrite (x86-64, Linux 6.1, 6.12 and 7.x):

- relocated fields (4 bytes, 8 for 64-bit ones);
- the ``call __fentry__`` that ftrace turns into a NOP (``__mcount_loc``);
- alternatives, paravirt sites, retpoline and return-thunk sites, static
  calls, jump labels and lock prefixes (their tables name each site; where
  objtool runs at link time, as on 6.12 and 7.x with IBT, the object has no
  return, retpoline or static call table, and the calls and jumps to the
  thunks and trampolines are found by their relocations);
- an ``endbr64`` at the entry, which IBT may seal.

``old_sha256`` in the manifest is the sha256 of the code with the masked
bytes zeroed: the same view the module checks.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from suture.builder.elfobj import ObjectFile, RelocType, Section

ENDBR64 = b"\xf3\x0f\x1e\xfa"

# Special section -> (entry size, offset of the relocation naming the site,
# bytes rewritten at the site: a number, or ("length byte at", offset in the entry)).
_SITES: dict[str, tuple[int, int, int | tuple[str, int]]] = {
    "__mcount_loc": (8, 0, 5),  # call __fentry__ -> nop5 (ftrace)
    # struct alt_instr: instrlen, the entry's second-last byte; 12 bytes on 6.1,
    # 14 after it (a 32-bit ft_flags): the size is read from the table.
    ".altinstructions": (12, 0, ("length", -2)),
    ".parainstructions": (16, 0, ("length", 9)),  # struct paravirt_patch_site: len
    ".retpoline_sites": (4, 0, 6),  # call/jmp/jcc to a thunk, up to 6 bytes
    ".return_sites": (4, 0, 6),  # jmp/jcc __x86_return_thunk -> ret; int3
    ".call_sites": (4, 0, 5),
    ".static_call_sites": (8, 0, 5),
    "__jump_table": (16, 0, 5),  # struct jump_entry: code (a nop or a jmp, 2 or 5 bytes)
    ".ibt_endbr_seal": (4, 0, 4),
    ".smp_locks": (4, 0, 1),  # the lock prefix (UP kernels patch it out)
}
# Relocation type -> the width of the field it fills.
_WIDTH: dict[int, int] = {RelocType.R_64: 8, RelocType.PC64: 8}
# Thunks the kernel rewrites calls and jumps to at boot (return thunks, retpolines).
# Builds that run objtool at link time (6.12, 7.x: IBT) list those sites in
# vmlinux's tables only, none in the object: the relocations name them instead.
# A static call's trampoline (__SCT__) too: its call sites become a direct call,
# a NOP or a RET at boot (7.x's might_resched() is a NOP under lazy preemption).
_THUNKS = (
    "__x86_return_thunk",
    "__x86_indirect_thunk_",
    "__x86_indirect_jump_thunk_",
    "__SCT__",
)
_OBJTOOL_SITES = (".return_sites", ".retpoline_sites")


@dataclass(frozen=True)
class Expected:
    """A function's code as built, and which of its bytes must match (1) or may differ (0)."""

    name: str
    code: bytes
    mask: bytes

    @property
    def sha256(self) -> str:
        """The sha256 of the code with the bytes that may differ zeroed (the manifest's)."""
        return hashlib.sha256(
            bytes(b if m else 0 for b, m in zip(self.code, self.mask, strict=True))
        ).hexdigest()

    @property
    def checked(self) -> int:
        """How many bytes the kernel compares."""
        return sum(self.mask)


def expected(obj: ObjectFile, sec: Section, name: str) -> Expected:
    """The expected bytes of the function in ``sec`` of ``obj`` (the object as the build has it).

    The code starts at the function's symbol, after any padding before it
    (``CONFIG_CALL_PADDING``, 6.2 on: :attr:`Section.start`), as the kernel's
    ``old_func`` does; offsets below are the section's, shifted by that.
    """
    begin = sec.start
    code = bytes(sec.data[begin:])
    mask = bytearray(b"\x01" * len(code))

    def hide(start: int, length: int) -> None:
        start -= begin
        for i in range(max(start, 0), min(start + length, len(code))):
            mask[i] = 0

    for r in sec.relas:
        hide(r.offset, _WIDTH.get(r.type, 4))
    if code.startswith(ENDBR64):
        hide(begin, len(ENDBR64))
    if not any(t.name in _OBJTOOL_SITES for t in obj.sections):
        for start, length in _thunk_sites(obj, sec):
            hide(start, length)
    for table in obj.sections:
        site = _SITES.get(table.name)
        if site is None:
            continue
        size, anchor, rewritten = site
        size = _entry_size(table, size)
        for r in table.relas:
            entry, where = divmod(r.offset, size)
            if where != anchor:
                continue
            sym = obj.symbols[r.sym]
            if obj.symbol_section(sym) is not sec:
                continue
            start = sym.value + r.addend  # data relocations: no PC bias
            if isinstance(rewritten, tuple):
                length = _byte(table, entry * size + rewritten[1] % size)
            else:
                length = rewritten
            hide(start, length)
    return Expected(name, code, bytes(mask))


def matches(e: Expected, shipped: bytes) -> bool:
    """The build's own code (``shipped``: the image's or the module file's) is what ``e`` expects.

    Only then may the kernel check it: a function compiled alone can be laid
    out otherwise than the linked one (the alignment of a loop inside it
    follows the function's place in the linked text, 6.12 and 7.x), and
    checking it would refuse a sound patch.
    """
    return len(shipped) == len(e.code) and all(
        not m or a == b for a, b, m in zip(e.code, shipped, e.mask, strict=True)
    )


def _entry_size(table: Section, size: int) -> int:
    """The entry size of ``table`` in this build: two relocations an entry for alternatives."""
    if table.name != ".altinstructions" or not table.relas or len(table.relas) % 2:
        return size
    entries = len(table.relas) // 2  # the code it patches, and its replacement
    found, rest = divmod(len(table.data), entries)
    return found if not rest and found in (12, 14) else size


def _thunk_sites(obj: ObjectFile, sec: Section) -> list[tuple[int, int]]:
    """(offset, length) of each call or jump to a thunk in ``sec``: the whole instruction."""
    sites = []
    for r in sec.relas:
        if not obj.symbols[r.sym].name.startswith(_THUNKS) or r.offset < 1:
            continue
        if sec.data[r.offset - 1] in (0xE8, 0xE9):  # call / jmp rel32
            sites.append((r.offset - 1, 5))
        elif r.offset >= 2 and sec.data[r.offset - 2] == 0x0F:  # jcc rel32
            sites.append((r.offset - 2, 6))
    return sites


def _byte(table: Section, offset: int) -> int:
    try:
        return int(struct.unpack_from("<B", table.data, offset)[0])
    except struct.error:
        return 0
