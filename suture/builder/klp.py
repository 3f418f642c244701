"""Turn references to unexported kernel symbols into livepatch relocations, after the final link.

Documentation/livepatch/module-elf-format.rst: a symbol the livepatch core
resolves is named ``.klp.sym.<object>.<name>,<sympos>`` with section index
SHN_LIVEPATCH, and the relocations against it live in sections named
``.klp.rela.<object>.<section>`` flagged SHF_RELA_LIVEPATCH. The module
loader leaves both alone; the core applies them when the patched object is
there (at once for vmlinux, at load time for a module).

This must run after kbuild's link and modpost: the linker does not know
SHN_LIVEPATCH, and modpost would take the symbols for unresolved ones.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

from suture.builder import elfwrite as ew
from suture.errors import BuildError

_SYM = struct.Struct("<IBBHQQ")
_STB_GLOBAL = 1


def _name_at(strtab: bytes, offset: int) -> str:
    return strtab[offset : strtab.index(b"\0", offset)].decode()


@dataclass(frozen=True)
class KlpSymbol:
    """A symbol the livepatch core resolves: ``.klp.sym.<objname>.<name>,<sympos>``."""

    objname: str  # vmlinux or the module the symbol lives in
    name: str  # in that object
    sympos: int = 0  # position among same-named symbols (0: unique)
    # The patched object whose load applies the relocation, when not ``objname``:
    # a module's patch names what another module exports to it (loaded first,
    # as a dependency) in the module's own ``.klp.rela.<module>.*`` sections.
    applied_with: str = ""

    @property
    def section_objname(self) -> str:
        """The ``<object>`` of the ``.klp.rela.<object>.<section>`` that holds its relocations."""
        return self.applied_with or self.objname

    @property
    def klp_name(self) -> str:
        """The symbol's name in the livepatch module."""
        return f".klp.sym.{self.objname}.{self.name},{self.sympos}"


def convert(ko: bytes, symbols: Mapping[str, KlpSymbol]) -> bytes:
    """Rewrite the linked module ``ko``: every undefined symbol in ``symbols`` becomes a klp one.

    Relocations against them move to one ``.klp.rela.<objname>.<section>`` per
    patched object and section: the core applies each object's when it is there,
    and refuses a module's section that names vmlinux symbols.

    Args:
        ko: the module as kbuild wrote it.
        symbols: undefined symbol of the module -> what the livepatch core resolves it to.
            Several patched files of one build keep their references apart by
            naming them differently in the module (same-named statics).

    Raises:
        BuildError: a symbol to convert is not an undefined global of the module.
    """
    sections = ew.read_sections(ko)
    by_name = {s.name: i for i, s in enumerate(sections)}
    symtab, strtab = sections[by_name[".symtab"]], sections[by_name[".strtab"]]
    strings = ew.StringTable(data=bytearray(strtab.data))
    data = bytearray(symtab.data)
    converted: dict[int, str] = {}  # symbol index -> objname
    for index in range(1, len(data) // _SYM.size):
        off = index * _SYM.size
        st_name, info, other, shndx, value, size = _SYM.unpack_from(data, off)
        name = _name_at(bytes(strtab.data), st_name)
        if name in symbols and shndx == ew.SHN_UNDEF and info >> 4 == _STB_GLOBAL:
            new_name = strings.add(symbols[name].klp_name)
            _SYM.pack_into(data, off, new_name, info, other, ew.SHN_LIVEPATCH, value, size)
            converted[index] = symbols[name].section_objname
    missing = set(symbols) - {
        _name_at(bytes(strtab.data), _SYM.unpack_from(symtab.data, i * _SYM.size)[0])
        for i in converted
    }
    if missing:
        raise BuildError(f"the linked module lacks the undefined symbols {sorted(missing)}")
    symtab.data = bytes(data)
    strtab.data = bytes(strings.data)
    symtab_index = by_name[".symtab"] + 1  # file index: the list starts at section 1
    new_sections = []
    for sec in sections:
        if sec.type != ew.SHT.RELA or sec.link != symtab_index:
            continue
        relas = ew.unpack_relas(sec.data)
        keep = [r for r in relas if r.symbol not in converted]
        if len(keep) == len(relas):
            continue
        sec.data = ew.pack_relas(keep)
        target = sections[sec.info - 1].name
        for objname in sorted({converted[r.symbol] for r in relas if r.symbol in converted}):
            moved = [r for r in relas if converted.get(r.symbol) == objname]
            new_sections.append(
                ew.OutSection(
                    f".klp.rela.{objname}.{target}", ew.SHT.RELA,
                    # ALLOC: the core applies relocations for a module patched
                    # later, when the file image the loader read is long freed.
                    ew.SHF.ALLOC | ew.SHF.INFO_LINK | ew.SHF.RELA_LIVEPATCH,
                    ew.pack_relas(moved), 8, 24,
                    link=sec.link, info=sec.info,
                )
            )  # fmt: skip
    return ew.write(sections + new_sections)
