"""The data objects of a compiled file, and which changes of them a live patch can carry.

With ``-fdata-sections`` most objects have a section of their own; some
share one (``__read_mostly``, ``__ro_after_init``, anything with a section
attribute). Either way an object is a named symbol, its bytes and the
relocations inside it. Where the running kernel keeps it (slots.Home)
decides what a change of it can be: read-only data is carried as a new
copy (data_copies.py); anything else is refused here.
"""

from __future__ import annotations

from dataclasses import dataclass

from suture.builder import slots
from suture.builder.differ import SPECIAL_STATIC, DiffResult
from suture.builder.elfobj import ObjectFile, Rela, Section, Symbol, SymType
from suture.errors import BuildError

SHADOW_HINT = (
    "keep the data as it is and attach new state with shadow variables "
    "(klp_shadow_*), or set it up in a pre-patch callback"
)


@dataclass(frozen=True)
class DataObject:
    """One data object of an object file: its section and symbol (its own section or shared)."""

    name: str
    section: Section
    symbol: Symbol

    @property
    def home(self) -> slots.Home:
        """Where the running kernel keeps it, as far as writing it goes."""
        return slots.section_home(self.section.name, self.section.flags)

    def code(self) -> tuple[bytes, list[Rela]]:
        """Its bytes and relocations, offsets relative to its start."""
        start, end = self.symbol.value, self.symbol.value + self.symbol.size
        relas = [
            Rela(r.offset - start, r.type, r.sym, r.addend)
            for r in self.section.relas
            if start <= r.offset < end
        ]
        return self.section.data[start:end], relas


def data_objects(obj: ObjectFile) -> dict[str, DataObject]:
    """The named data objects of ``obj`` (compiler-private labels and per-site statics aside)."""
    found = {}
    for sym in obj.symbols:
        sec = obj.symbol_section(sym)
        if (
            sym.type == SymType.OBJECT
            and sec is not None
            and not sec.is_text
            and not sym.name.startswith(".L")
            and not SPECIAL_STATIC.match(sym.name)
        ):
            found[sym.name] = DataObject(sym.name, sec, sym)
    return found


def refuse_changed_data(source: str, orig: ObjectFile, diff: DiffResult) -> None:
    """Refuse changed data a copy cannot stand in for: writable, ro_after_init, per-CPU, boot.

    Raises:
        BuildError: names the first such object and why.
    """
    objects = data_objects(orig)
    for name in diff.changed_data:
        home = objects[name].home if name in objects else slots.Home.WRITABLE
        if home is slots.Home.READ_ONLY:
            continue
        if home is slots.Home.RO_AFTER_INIT:
            why = (
                "it is __ro_after_init: the kernel wrote it at boot, and a copy compiled "
                "from the source would lose what boot put there"
            )
        elif home in (slots.Home.INIT, slots.Home.BOOT_CALLS):
            why = "it is boot-time data: it was used at boot and freed"
        else:
            why = f"it is {home.value}, which the running kernel may have changed and code may hold"
        raise BuildError(
            f"{source}: the fix changes existing data ({name}); {why}: "
            "a live patch cannot change data the running kernel already uses",
            hint=SHADOW_HINT,
        )
