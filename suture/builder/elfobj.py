"""A relocatable object (``.o``) as the differ sees it: sections, symbols, relocations.

Read with pyelftools; ELF constants are IntEnums, relocation semantics a
table keyed by type. Section symbols and the symbols "bundled" with their
own section (``-ffunction-sections``: ``.text.foo`` holds only ``foo``) are
resolved here, so the differ can talk in terms of named things.
"""

from __future__ import annotations

import enum
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from suture.errors import BuildError
from suture.kernel.modinfo import module_bytes

# Suffixes of the compressed module files distros ship (read through module_bytes).
COMPRESSED = (".xz", ".gz", ".zst")


class SymType(enum.IntEnum):
    """``STT_*``."""

    NOTYPE = 0
    OBJECT = 1
    FUNC = 2
    SECTION = 3
    FILE = 4


class SymBind(enum.IntEnum):
    """``STB_*``."""

    LOCAL = 0
    GLOBAL = 1
    WEAK = 2


class RelocType(enum.IntEnum):
    """The x86-64 relocation types that appear in kernel objects."""

    NONE = 0
    R_64 = 1
    PC32 = 2
    PLT32 = 4
    R_32 = 10
    R_32S = 11
    PC64 = 24


# How far past the relocated field the CPU's "next instruction" is, for
# PC-relative types: a rip-relative operand is usually the instruction's last
# field, so target = addend + 4 (kpatch decodes the instruction to be exact).
PC_RELATIVE: dict[int, int] = {RelocType.PC32: 4, RelocType.PLT32: 4, RelocType.PC64: 8}

SHF_STRINGS = 0x20
SHF_EXECINSTR = 0x4
SHN_UNDEF = 0

_DEBUG = (".debug", ".BTF")
_FUNC_SECTION = re.compile(r"^\.text(?:\.unlikely|\.hot)?\.(.+)$")


@dataclass(frozen=True)
class Symbol:
    """One ``.symtab`` entry."""

    index: int
    name: str
    type: int
    bind: int
    shndx: int  # section index, or SHN_UNDEF / SHN_ABS ...
    value: int
    size: int


@dataclass(frozen=True)
class Rela:
    """One ``Elf64_Rela``."""

    offset: int
    type: int
    sym: int
    addend: int


@dataclass
class Section:
    """One section with its data and (if any) its relocations."""

    index: int
    name: str
    type: str
    flags: int
    data: bytes
    type_num: int = 0  # sh_type as a number
    addralign: int = 1
    entsize: int = 0
    size: int = 0  # sh_size (for NOBITS, the size in memory)
    relas: list[Rela] = field(default_factory=list)
    symbol: Symbol | None = None  # the FUNC/OBJECT bundled with it, when one is

    @property
    def is_text(self) -> bool:
        """Executable code."""
        return bool(self.flags & SHF_EXECINSTR)

    @property
    def start(self) -> int:
        """Where its function starts: after the padding kernels from 6.2 put before each one.

        ``CONFIG_CALL_PADDING`` (``-fpatchable-function-entry=16,16``) puts 16
        NOPs at the start of the section and the symbol after them; on 6.1 the
        function starts the section.
        """
        return self.symbol.value if self.symbol is not None else 0

    @property
    def code_size(self) -> int:
        """The size of its function, padding left out."""
        return len(self.data) - self.start

    @property
    def is_strings(self) -> bool:
        """A merged string section (``.rodata.str1.1`` and per-function variants)."""
        return bool(self.flags & SHF_STRINGS)


def target_offset(rela: Rela) -> int:
    """Where in its target a relocation points (the PC-relative bias taken out)."""
    return rela.addend + PC_RELATIVE.get(rela.type, 0)


class ObjectFile:
    """A parsed relocatable object."""

    def __init__(self, path: Path, sections: list[Section], symbols: list[Symbol]) -> None:
        self.path = path
        self.sections = sections
        self.symbols = symbols
        self.by_name = {s.name: s for s in sections}

    @classmethod
    def load(cls, path: Path) -> ObjectFile:
        """Read ``path``: an object, or a distro's module, compressed as it ships (``.ko.xz``).

        Raises:
            BuildError: not a readable ELF relocatable object.
        """
        try:
            if path.suffix in COMPRESSED:  # Debian 13's modules (CONFIG_MODULE_COMPRESS_XZ)
                return cls._read(path, ELFFile(io.BytesIO(module_bytes(path))))
            with path.open("rb") as f:
                return cls._read(path, ELFFile(f))
        except (OSError, ELFError, ValueError) as e:
            raise BuildError(f"cannot read object {path}: {e}") from e

    @classmethod
    def _read(cls, path: Path, elf: ELFFile) -> ObjectFile:
        sections = []
        for i, sec in enumerate(elf.iter_sections()):
            # Debug info is never compared nor carried: not read (it is most of an object).
            skip = sec["sh_type"] == "SHT_NOBITS" or sec.name.startswith(_DEBUG)
            data = b"" if skip else sec.data()
            sections.append(
                Section(
                    i, sec.name, sec["sh_type"], sec["sh_flags"], data,
                    type_num=_SHT_NUMBER.get(sec["sh_type"], 1), addralign=sec["sh_addralign"],
                    entsize=sec["sh_entsize"], size=sec["sh_size"],
                )
            )  # fmt: skip
        symtab = elf.get_section_by_name(".symtab")
        symbols = []
        entries = symtab.iter_symbols() if isinstance(symtab, SymbolTableSection) else []
        for i, s in enumerate(entries):
            shndx = s["st_shndx"] if isinstance(s["st_shndx"], int) else 0xFFF1
            stype = _INFO_TYPE.get(s["st_info"]["type"], -1)
            name = s.name or (sections[shndx].name if stype == SymType.SECTION else "")
            symbols.append(
                Symbol(
                    i,
                    name,
                    stype,
                    _INFO_BIND.get(s["st_info"]["bind"], -1),
                    shndx,
                    s["st_value"],
                    s["st_size"],
                )
            )
        for rsec in elf.iter_sections():
            if (
                isinstance(rsec, RelocationSection)
                and rsec["sh_type"] == "SHT_RELA"
                and not sections[rsec["sh_info"]].name.startswith(_DEBUG)
            ):
                target = sections[rsec["sh_info"]]
                target.relas = [
                    Rela(r["r_offset"], r["r_info_type"], r["r_info_sym"], r["r_addend"])
                    for r in rsec.iter_relocations()
                ]
        for sym in symbols:
            if sym.type in (SymType.FUNC, SymType.OBJECT) and sym.shndx:
                home = sections[sym.shndx] if sym.shndx < len(sections) else None
                # foo.cold lives in .text.unlikely.foo: GCC names the section after the parent.
                owner = sym.name.removesuffix(".cold")
                if (
                    home is not None
                    and home.symbol is None
                    and home.name.endswith(owner)
                    and _starts_at(home, sym)
                ):
                    home.symbol = sym
        return cls(path, sections, symbols)

    def functions(self) -> dict[str, Section]:
        """Function name -> its own section (``.text[.unlikely|.hot].<name>``)."""
        found = {}
        for sec in self.sections:
            if sec.symbol is not None and sec.symbol.type == SymType.FUNC:
                match = _FUNC_SECTION.match(sec.name)
                if match and match.group(1) == sec.symbol.name.removesuffix(".cold"):
                    found[sec.symbol.name] = sec
        return found

    def string_at(self, section: Section, offset: int) -> str:
        """The NUL-terminated string at ``offset`` of a string section."""
        end = section.data.find(b"\0", offset)
        return section.data[offset : end if end >= 0 else None].decode("utf-8", "replace")

    def symbol_at(self, sec: Section, offset: int) -> Symbol | None:
        """The function or object of ``sec`` that covers ``offset``, or None."""
        for s in self.symbols:
            if (
                s.shndx == sec.index
                and s.type in (SymType.FUNC, SymType.OBJECT)
                and s.value <= offset < s.value + max(s.size, 1)
            ):
                return s
        return None

    def symbol_section(self, sym: Symbol) -> Section | None:
        """The section ``sym`` is defined in, or None (undefined, absolute, common)."""
        if 0 < sym.shndx < len(self.sections):
            return self.sections[sym.shndx]
        return None


_MAX_PADDING = 64  # bytes of NOPs a kernel puts before a function (16 on 6.12 and 7.x)


def _starts_at(home: Section, sym: Symbol) -> bool:
    """``sym`` is where its section's one function (or object) starts, after any padding."""
    if sym.value == 0:
        return True
    return (
        sym.type == SymType.FUNC
        and home.is_text
        and sym.value <= _MAX_PADDING
        and home.data[: sym.value] == b"\x90" * sym.value
    )


_SHT_NUMBER = {"SHT_NULL": 0, "SHT_PROGBITS": 1, "SHT_SYMTAB": 2, "SHT_STRTAB": 3, "SHT_RELA": 4,
               "SHT_NOBITS": 8}  # fmt: skip
_INFO_TYPE = {
    "STT_NOTYPE": SymType.NOTYPE,
    "STT_OBJECT": SymType.OBJECT,
    "STT_FUNC": SymType.FUNC,
    "STT_SECTION": SymType.SECTION,
    "STT_FILE": SymType.FILE,
}
_INFO_BIND = {"STB_LOCAL": SymBind.LOCAL, "STB_GLOBAL": SymBind.GLOBAL, "STB_WEAK": SymBind.WEAK}
