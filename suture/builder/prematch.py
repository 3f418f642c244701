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
boot fill in or rewrite (x86-64, Linux 6.1):

- relocated fields (4 bytes, 8 for 64-bit ones);
- the ``call __fentry__`` that ftrace turns into a NOP (``__mcount_loc``);
- alternatives, paravirt sites, retpoline and return-thunk sites, static
  calls, jump labels and lock prefixes (their tables name each site);
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
    ".altinstructions": (12, 0, ("length", 10)),  # struct alt_instr: instrlen
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
    for table in obj.sections:
        site = _SITES.get(table.name)
        if site is None:
            continue
        size, anchor, rewritten = site
        for r in table.relas:
            entry, where = divmod(r.offset, size)
            if where != anchor:
                continue
            sym = obj.symbols[r.sym]
            if obj.symbol_section(sym) is not sec:
                continue
            start = sym.value + r.addend  # data relocations: no PC bias
            if isinstance(rewritten, tuple):
                length = _byte(table, entry * size + rewritten[1])
            else:
                length = rewritten
            hide(start, length)
    return Expected(name, code, bytes(mask))


def _byte(table: Section, offset: int) -> int:
    try:
        return int(struct.unpack_from("<B", table.data, offset)[0])
    except struct.error:
        return 0
