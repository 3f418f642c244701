"""Which of several same-named local symbols of a build a patched file means.

The livepatch core finds a symbol by name and position among same-named
symbols (``sympos``). Many locals share a name: ACPICA's
``_acpi_module_name`` is defined by each of its files, and a table a header
defines (ext4's ``ext4_filetype_table``) is copied into every file that uses
it. The patched file's own compile of the symbol tells which one it is:

- by content: the object's bytes, or the function's code (relocated fields
  and the ftrace entry left out), against the bytes at each candidate in the
  build (the vmlinux image, or the module's ``.ko``);
- by reference, when several candidates hold the same bytes: a function of
  the file that is found in the build (by a unique name or by its own code)
  refers to the symbol, and the build's copy of that function says where to
  (the displacement or address the image holds; the ``.ko``'s relocation).

Only a single match is taken. When neither tells (a symbol in ``.bss``, which
the image does not hold), the nearest uniquely named symbol of the file
decides, as :meth:`~suture.builder.symbols.Kallsyms.sympos` does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from suture.builder import outside
from suture.builder.elfobj import ObjectFile, Rela, RelocType, Section, SymType
from suture.builder.symbols import Kallsyms
from suture.errors import BuildError

if TYPE_CHECKING:
    from suture.builder.target import Target

_SHT_NOBITS = 8
_WIDE = (RelocType.R_64, RelocType.PC64)
_PC_RELATIVE = (RelocType.PC32, RelocType.PLT32, RelocType.PC64)
_SIGNED = (RelocType.PC32, RelocType.PLT32, RelocType.PC64, RelocType.R_32S, RelocType.R_64)
_SHOWN = 8  # candidates named in a refusal
_ADDRESS_MASK = (1 << 64) - 1


class ImageBytes(Protocol):
    """The loaded bytes of the build's vmlinux (suture.builder.image_refs.ImageIndex)."""

    def bytes_at(self, address: int, size: int) -> bytes | None:
        """``size`` bytes at ``address`` of a loaded section, or None."""
        ...


@dataclass(frozen=True)
class _Local:
    """A function or object of the compiled file: its bytes and relocations."""

    data: bytes
    relas: list[Rela]  # offsets relative to its start
    nobits: bool
    function: Section | None  # a function's own section (-ffunction-sections)


def _local(obj: ObjectFile, name: str) -> _Local | None:
    """The one function or object named ``name`` that ``obj`` defines, or None."""
    found = [
        s
        for s in obj.symbols
        if s.name == name
        and s.type in (SymType.FUNC, SymType.OBJECT)
        and obj.symbol_section(s) is not None
    ]
    sec = obj.symbol_section(found[0]) if len(found) == 1 else None
    if sec is None:
        return None
    sym = found[0]
    end = sym.value + sym.size
    nobits = sec.type_num == _SHT_NOBITS
    relas = [
        Rela(r.offset - sym.value, r.type, r.sym, r.addend)
        for r in sec.relas
        if sym.value <= r.offset < end
    ]
    data = bytes(sym.size) if nobits else sec.data[sym.value : end]
    function = sec if sym.type == SymType.FUNC and sec.symbol is sym else None
    return _Local(data, relas, nobits, function)


def _same(obj: ObjectFile, local: _Local, other: bytes | None) -> bool:
    """``other`` holds what ``local`` compiles to, relocated fields and a function's entry aside."""
    if other is None or len(other) != len(local.data):
        return False
    if local.function is not None:
        return outside.matches_image(obj, local.function, other)
    mask = bytearray(len(local.data))
    for r in local.relas:
        width = 8 if r.type in _WIDE else 4
        mask[r.offset : r.offset + width] = b"\x01" * width
    return all(m or a == b for m, a, b in zip(mask, local.data, other, strict=True))


class SameNames:
    """Positions of the symbols one compiled file refers to, in vmlinux or in its module.

    Args:
        obj: the file compiled as the running kernel has it.
        ksyms: the symbols of the object it is linked into (kallsyms, or the
            module's symbol table, whose "addresses" are symbol indexes).
        image: reads the vmlinux image's bytes (for vmlinux); called only when
            a name is shared, as reading the image takes a while.
        module: reads the module's ``.ko`` as shipped (for a module), likewise.
    """

    def __init__(
        self,
        obj: ObjectFile,
        ksyms: Kallsyms,
        *,
        image: Callable[[], ImageBytes] | None = None,
        module: Callable[[], ObjectFile] | None = None,
    ) -> None:
        self.obj = obj
        self.ksyms = ksyms
        self._image = image
        self._module = module
        # What the file defines (not what it only uses) places it among same-named ones.
        self.anchors = [
            s.name
            for s in obj.symbols
            if s.name
            and obj.symbol_section(s) is not None
            and s.type in (SymType.FUNC, SymType.OBJECT)
        ]
        self._known: dict[str, int] = {}

    @functools.cached_property
    def image(self) -> ImageBytes | None:
        """The vmlinux image's bytes, or None for a module."""
        return self._image() if self._image is not None else None

    @functools.cached_property
    def module(self) -> ObjectFile | None:
        """The module's ``.ko``, or None for vmlinux."""
        return self._module() if self._module is not None else None

    def sympos(self, name: str) -> int:
        """The livepatch ``sympos`` of ``name``: 0 when unique, else its 1-based position.

        Raises:
            BuildError: several symbols have that name and nothing tells which one is meant.
        """
        if name not in self._known:
            self._known[name] = self._sympos(name)
        return self._known[name]

    def _sympos(self, name: str) -> int:
        candidates = self.ksyms.by_name.get(name, [])
        if len(candidates) <= 1:
            return 0
        everyone = list(range(len(candidates)))
        by_content = self._by_content(name, everyone)
        if by_content is not None and len(by_content) == 1:
            return by_content[0] + 1
        # Equal bytes (a table a header defines): the file's references tell.
        by_refs = self._by_references(name, by_content or everyone)
        if by_refs is not None and len(by_refs) == 1:
            return by_refs[0] + 1
        if by_content is None and by_refs is None:
            return self.ksyms.sympos(name, self.anchors)  # nothing to compare: neighbours
        matches = by_refs if by_refs is not None else by_content or []
        shown = ", ".join(self._where(candidates[i][0]) for i in matches[:_SHOWN])
        found = (
            f"{len(matches)} of them ({shown}) match what the patched file compiles to"
            if matches
            else "none of them holds what the patched file compiles to"
        )
        raise BuildError(
            f"the kernel has {len(candidates)} symbols named {name}, and {found}: "
            "nothing tells which one is meant",
            hint=f"rename {name} in the fix, or reach it only through functions of the file",
        )

    def _where(self, address: int) -> str:
        return f"#{address}" if self._module is not None else f"{address:#x}"

    # -- by content ----------------------------------------------------------

    def _by_content(self, name: str, pool: list[int]) -> list[int] | None:
        """Candidates holding the compiled bytes of ``name``; None when that cannot tell."""
        local = _local(self.obj, name)
        if local is None or local.nobits or not local.data:
            return None
        candidates = self.ksyms.by_name[name]
        size = len(local.data)
        return [i for i in pool if _same(self.obj, local, self._bytes(candidates[i][0], size))]

    def _bytes(self, where: int, size: int) -> bytes | None:
        """The bytes of the build's symbol at ``where`` (an address, or a module symbol index)."""
        if self.module is not None:
            if not 0 < where < len(self.module.symbols):
                return None
            sym = self.module.symbols[where]
            sec = self.module.symbol_section(sym)
            if sec is None or sec.type_num == _SHT_NOBITS or sym.value + size > len(sec.data):
                return None
            return sec.data[sym.value : sym.value + size]
        return self.image.bytes_at(where, size) if self.image is not None else None

    # -- by reference --------------------------------------------------------

    def _by_references(self, name: str, pool: list[int]) -> list[int] | None:
        """Candidates the build's copies of the file's functions refer to as ``name``."""
        addresses = {self.ksyms.by_name[name][i][0]: i for i in pool}
        seen: set[int] = set()
        told = False
        for func, rela, base in self._uses(name):
            where = self._found(func)
            if where is None:
                continue
            target = self._resolved(where, rela, base, name)
            if target is None:
                continue
            told = True
            if target in addresses:
                seen.add(addresses[target])
        return sorted(seen) if told else None

    def _uses(self, name: str) -> list[tuple[str, Rela, int]]:
        """(function, relocation, offset of ``name`` in the relocation's symbol) per use.

        The relocation's offset is taken from the function's start, which is
        where the build's symbol for it is: after the NOP padding that
        ``CONFIG_CALL_PADDING`` puts at the start of its section (6.2 on).
        """
        found = [
            s for s in self.obj.symbols if s.name == name and self.obj.symbol_section(s) is not None
        ]
        if len(found) != 1:
            return []
        target = found[0]
        end = target.value + max(target.size, 1)
        uses = []
        for func, sec in self.obj.functions().items():
            for r in sec.relas if func != name else ():
                sym = self.obj.symbols[r.sym]
                own = Rela(r.offset - sec.start, r.type, r.sym, r.addend)
                if sym is target:
                    uses.append((func, own, 0))
                elif (
                    sym.type == SymType.SECTION
                    and sym.shndx == target.shndx
                    and target.value <= _points_at(r) < end
                ):
                    uses.append((func, own, target.value))
        return uses

    def _found(self, func: str) -> int | None:
        """Where the build has function ``func`` of the file: unique by name, or by its code."""
        entries = self.ksyms.by_name.get(func, [])
        if len(entries) == 1:
            return entries[0][0]
        matches = self._by_content(func, list(range(len(entries)))) if entries else None
        return entries[matches[0]][0] if matches is not None and len(matches) == 1 else None

    def _resolved(self, where: int, rela: Rela, base: int, name: str) -> int | None:
        """What the build's copy of a function (at ``where``) has in place of ``rela``.

        An address (vmlinux), or a symbol index (a module), of the symbol the
        relocation names; ``base`` is where that symbol starts in the
        relocation's own symbol (a section symbol's offset).
        """
        if self.module is not None:
            return self._module_target(self.module, where, (rela, base, name))
        width = 8 if rela.type in _WIDE else 4
        raw = self.image.bytes_at(where + rela.offset, width) if self.image else None
        if raw is None:
            return None
        value = int.from_bytes(raw, "little", signed=rela.type in _SIGNED)
        if rela.type in _PC_RELATIVE:
            value += where + rela.offset
        return (value - (rela.addend - base)) & _ADDRESS_MASK  # sign-extended: an address

    @staticmethod
    def _module_target(ko: ObjectFile, index: int, use: tuple[Rela, int, str]) -> int | None:
        """The symbol index the module's relocation in place of ``use`` names."""
        rela, base, name = use
        func = ko.symbols[index] if 0 < index < len(ko.symbols) else None
        sec = ko.symbol_section(func) if func is not None else None
        if func is None or sec is None:
            return None
        place = func.value + rela.offset
        found = next((r for r in sec.relas if r.offset == place and r.type == rela.type), None)
        if found is None:
            return None
        sym = ko.symbols[found.sym]
        if sym.type != SymType.SECTION:
            return sym.index
        home = ko.symbol_section(sym)
        offset = found.addend - (rela.addend - base)
        if home is None:
            return None
        inside = [
            s for s in ko.symbols if s.shndx == home.index and s.value == offset and s.name == name
        ]
        return inside[0].index if len(inside) == 1 else None


def _points_at(rela: Rela) -> int:
    """Where in its symbol a relocation points (the PC-relative bias taken out)."""
    return rela.addend + (4 if rela.type in (RelocType.PC32, RelocType.PLT32) else 0)


def in_target(obj: ObjectFile, objname: str, target: Target) -> SameNames:
    """The positions of what ``obj``, linked into ``objname`` of ``target``, refers to."""
    if objname == "vmlinux":
        return SameNames(obj, target.kallsyms, image=lambda: target.image_index)
    return SameNames(obj, target.symbols_of(objname), module=lambda: target.module_file(objname))
