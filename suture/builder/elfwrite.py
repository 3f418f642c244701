"""Write ELF64 little-endian relocatable files (objects and kernel modules).

pyelftools reads ELF but does not write it. The builder needs two writes:
a new object holding only the functions a fix changes, and a rewrite of the
linked module that turns some relocations into livepatch relocations. Both
are "a list of sections in, a file out"; this module does only that.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_RELA = struct.Struct("<QQq")

EM_X86_64 = 62
ET_REL = 1


class SHT(enum.IntEnum):
    """Section types."""

    NULL = 0
    PROGBITS = 1
    SYMTAB = 2
    STRTAB = 3
    RELA = 4
    NOBITS = 8


class SHF(enum.IntFlag):
    """Section flags."""

    WRITE = 0x1
    ALLOC = 0x2
    EXECINSTR = 0x4
    MERGE = 0x10
    STRINGS = 0x20
    INFO_LINK = 0x40
    RELA_LIVEPATCH = 0x00100000  # include/uapi/linux/elf.h


SHN_UNDEF = 0
SHN_LIVEPATCH = 0xFF20  # include/uapi/linux/elf.h: resolved by the livepatch core


@dataclass
class OutSymbol:
    """A symbol to write; ``section`` is an output section index or a SHN_* value."""

    name: str
    info: int  # (bind << 4) | type
    section: int
    value: int = 0
    size: int = 0
    other: int = 0

    @property
    def bind(self) -> int:
        """STB_*."""
        return self.info >> 4


@dataclass(frozen=True)
class OutRela:
    """A relocation against ``symbol`` (an index into the output symbol list)."""

    offset: int
    type: int
    symbol: int
    addend: int


@dataclass
class OutSection:
    """A section to write. ``link`` and ``info`` are output section indexes."""

    name: str
    type: int
    flags: int = 0
    data: bytes = b""
    addralign: int = 1
    entsize: int = 0
    link: int = 0
    info: int = 0
    size: int | None = None  # NOBITS only: the size in memory


@dataclass
class StringTable:
    """A string table that shares nothing but is built once."""

    data: bytearray = field(default_factory=lambda: bytearray(b"\0"))
    index: dict[str, int] = field(default_factory=dict)

    def add(self, text: str) -> int:
        """Offset of ``text``, appended on first use."""
        if not text:
            return 0
        if text not in self.index:
            self.index[text] = len(self.data)
            self.data += text.encode() + b"\0"
        return self.index[text]


def pack_symbols(symbols: list[OutSymbol], strtab: StringTable) -> bytes:
    """``.symtab`` contents (index 0, the null symbol, is added here)."""
    out = bytearray(_SYM.pack(0, 0, 0, 0, 0, 0))
    for s in symbols:
        out += _SYM.pack(strtab.add(s.name), s.info, s.other, s.section, s.value, s.size)
    return bytes(out)


def pack_relas(relas: list[OutRela]) -> bytes:
    """``.rela.*`` contents; symbol indexes count the null symbol as 0."""
    return b"".join(_RELA.pack(r.offset, (r.symbol << 32) | r.type, r.addend) for r in relas)


def unpack_symbols(data: bytes) -> list[OutSymbol]:
    """Parse ``.symtab`` contents (the null symbol dropped); names are left empty."""
    syms = []
    for off in range(_SYM.size, len(data), _SYM.size):
        _name, info, other, shndx, value, size = _SYM.unpack_from(data, off)
        syms.append(OutSymbol("", info, shndx, value, size, other))
    return syms


def unpack_relas(data: bytes) -> list[OutRela]:
    """Parse ``.rela.*`` contents."""
    out = []
    for off in range(0, len(data), _RELA.size):
        offset, info, addend = _RELA.unpack_from(data, off)
        out.append(OutRela(offset, info & 0xFFFFFFFF, info >> 32, addend))
    return out


def write(sections: list[OutSection], machine: int = EM_X86_64) -> bytes:
    """An ET_REL file holding ``sections`` (index 0 is added; ``.shstrtab`` is appended).

    Output section ``i`` in the list has index ``i + 1`` in the file.
    """
    shstrtab = StringTable()
    names = [shstrtab.add(s.name) for s in sections]
    shstr_name = shstrtab.add(".shstrtab")
    all_sections = [*sections, OutSection(".shstrtab", SHT.STRTAB, data=bytes(shstrtab.data))]
    names.append(shstr_name)
    body = bytearray(_EHDR.size)
    offsets = []
    for sec in all_sections:
        if sec.type == SHT.NOBITS:
            offsets.append(len(body))
            continue
        body += bytes(-len(body) % max(sec.addralign, 1))
        offsets.append(len(body))
        body += sec.data
    body += bytes(-len(body) % 8)
    shoff = len(body)
    body += _SHDR.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    for sec, name, off in zip(all_sections, names, offsets, strict=True):
        size = sec.size if sec.type == SHT.NOBITS and sec.size is not None else len(sec.data)
        body += _SHDR.pack(
            name, sec.type, sec.flags, 0, off, size, sec.link, sec.info, sec.addralign, sec.entsize
        )
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    count = len(all_sections) + 1
    _EHDR.pack_into(
        body, 0, ident, ET_REL, machine, 1, 0, 0, shoff, 0, _EHDR.size, 0, 0, _SHDR.size,
        count, count - 1,
    )  # fmt: skip
    return bytes(body)


def read_sections(data: bytes) -> list[OutSection]:
    """Every section of an ELF64 LE file except index 0, ready to be changed and written back.

    ``.shstrtab`` is dropped (``write`` makes a new one), so indexes of the
    sections after it shift down by one; callers that keep it last are safe.
    """
    fields = _EHDR.unpack_from(data)
    shoff, shnum, shstrndx = fields[6], fields[12], fields[13]
    headers = [_SHDR.unpack_from(data, shoff + i * _SHDR.size) for i in range(shnum)]
    strtab = headers[shstrndx]
    names = data[strtab[4] : strtab[4] + strtab[5]]
    out = []
    for i, h in enumerate(headers[1:], start=1):
        if i == shstrndx:
            continue
        name = names[h[0] : names.index(b"\0", h[0])].decode()
        body = b"" if h[1] == SHT.NOBITS else data[h[4] : h[4] + h[5]]
        size = h[5] if h[1] == SHT.NOBITS else None
        out.append(OutSection(name, h[1], h[2], body, h[8], h[9], h[6], h[7], size))
    if shstrndx != shnum - 1:
        raise ValueError("the section name table is not the last section; cannot rewrite")
    return out
