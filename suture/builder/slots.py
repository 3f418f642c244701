"""Stored pointers to a carried function: which can be redirected at patch time, which cannot.

A function without an ftrace entry whose address sits in data (an ops table,
a notifier block, a ``struct tracer``) is reached through that stored
pointer, not through a caller the livepatch core can redirect. When the
pointer is in memory the running kernel may write, and storing it is one
aligned 8-byte store, the patch redirects it: its callbacks check that the
slot holds the kernel's function, store the carried copy's address after
the transition, and put the original back before the patch goes
(patch_runtime.py, ADR 14). Any other stored pointer is refused, named:

- read-only data (``.rodata``, ``const``): the kernel maps it read-only;
- ``__ro_after_init``: read-only once the kernel has booted;
- boot-time data (``__initdata``, ``__initconst``): freed after boot, and
  whatever copied the pointer out of it keeps the old function;
- per-CPU data: the image holds a template, each CPU its own copy;
- a 4-byte field (a 32-bit address or a PC-relative offset): not a pointer
  one store can swap.

A pointer in an initcall table is a call made once at boot: no path, as a
call from ``__init`` code is (callers.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from suture.builder.elfobj import ObjectFile, Rela, RelocType, Section, Symbol
from suture.errors import BuildError

SHF_WRITE = 0x1
POINTER_SIZE = 8


class Home(enum.Enum):
    """Where data lives in the running kernel, as far as writing it goes."""

    WRITABLE = "writable data"
    READ_ONLY = "read-only data"
    RO_AFTER_INIT = "__ro_after_init data"
    INIT = "boot-time data"
    PERCPU = "per-CPU data"
    BOOT_CALLS = "an initcall table"


# Why each home cannot take a redirected pointer (or a carried data copy's users).
_WHY = {
    Home.READ_ONLY: "it is read-only (the kernel maps it so): a pointer there cannot be stored",
    Home.RO_AFTER_INIT: "it is __ro_after_init: read-only once the kernel has booted",
    Home.INIT: "it is boot-time data, freed after boot: whatever copied the pointer out of it "
    "keeps the old function",
    Home.PERCPU: "it is per-CPU data: each CPU has its own copy, made at boot",
}

_INIT_PREFIXES = (".init.", ".exit.", ".meminit.", ".ref.")
_BOOT_CALL_PREFIXES = (".initcall", ".con_initcall", ".security_initcall")


def section_home(name: str, flags: int) -> Home:
    """Where data of the object section ``name`` ends up in the running kernel."""
    if name.startswith(_BOOT_CALL_PREFIXES):
        return Home.BOOT_CALLS
    if name.startswith(_INIT_PREFIXES):
        return Home.INIT
    if name.startswith(".data..percpu"):
        return Home.PERCPU
    if name.startswith(".data..ro_after_init"):
        return Home.RO_AFTER_INIT
    return Home.WRITABLE if flags & SHF_WRITE else Home.READ_ONLY


@dataclass(frozen=True)
class Slot:
    """A stored pointer to a function: in which object, at which offset, in what memory.

    Attributes:
        symbol: the data object holding it (its kallsyms or object name).
        offset: bytes from the object's start to the pointer.
        section: the section or area of the kernel it lives in, for messages.
        home: what the running kernel lets be written there.
        width: bytes of the stored value (8: an absolute pointer).
        relative: the value is an offset from where it is stored (PREL32, PC64).
        address: where it is in the vmlinux image, when the image scan found it.
        misaligned: its offset or section alignment already rules out an aligned store.
    """

    symbol: str
    offset: int
    section: str
    home: Home
    width: int = POINTER_SIZE
    relative: bool = False
    address: int = 0
    misaligned: bool = False

    def describe(self) -> str:
        """``nop_trace+0x70 (.data..read_mostly)``."""
        return f"{self.symbol}+{self.offset:#x} ({self.section})"

    @property
    def boot_call(self) -> bool:
        """A call made once at boot (an initcall table entry): no path at run time."""
        return self.home is Home.BOOT_CALLS

    def why_not(self) -> str:
        """Why this pointer cannot be redirected by one store at patch time; "" when it can."""
        if self.home in _WHY:
            return _WHY[self.home]
        if self.relative or self.width != POINTER_SIZE:
            what = "a PC-relative offset" if self.relative else "a 32-bit address"
            return f"it is {what} ({self.width} bytes), not a pointer one 8-byte store swaps"
        if self.misaligned or self.address % POINTER_SIZE:
            return "it is not 8-byte aligned: one store could not swap it atomically"
        return ""


# Bytes each relocation type stores.
_WIDTH: dict[int, int] = {
    RelocType.R_64: 8,
    RelocType.PC64: 8,
    RelocType.PC32: 4,
    RelocType.PLT32: 4,
    RelocType.R_32: 4,
    RelocType.R_32S: 4,
}
_RELATIVE: set[int] = {RelocType.PC32, RelocType.PLT32, RelocType.PC64}


def object_slot(obj: ObjectFile, sec: Section, rela: Rela, owner: Symbol | None) -> Slot:
    """The slot a data relocation of ``obj`` fills, named by the object that holds it."""
    offset = rela.offset - owner.value if owner is not None else rela.offset
    return Slot(
        owner.name if owner is not None else sec.name,
        offset,
        sec.name,
        section_home(sec.name, sec.flags),
        width=_WIDTH.get(rela.type, 0),
        relative=rela.type in _RELATIVE,
        # The final address is known once linked (the pipeline checks vmlinux's,
        # the stub any at run time); an odd place in the section rules it out now.
        misaligned=rela.offset % POINTER_SIZE != 0 or sec.addralign < POINTER_SIZE,
    )


def refuse_slots(path: list[str], bad: list[Slot]) -> None:
    """Refuse a carried function whose address sits where it cannot be redirected; name each."""
    if not bad:
        return
    # The object's relocations and the image scan may name the same slot: once each.
    named: dict[tuple[str, int], str] = {}
    for slot in bad:
        named.setdefault((slot.symbol, slot.offset), f"{slot.describe()}: {slot.why_not()}")
    shown = "; ".join(named.values())
    raise BuildError(
        f"{path[0]} changed but has no ftrace entry, and "
        f"{'its address is' if len(path) == 1 else f'the address of {path[-1]} is'} stored "
        f"where a live patch cannot redirect it: {shown}",
        hint="a stored pointer is redirected only in writable data, one aligned 8-byte "
        "pointer; move the fix into a function with an ftrace entry, or patch it by hand",
    )
