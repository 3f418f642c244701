"""Where things are in the shipped library: functions, their hashes, and the names a patch uses.

Positions come from three places, checked against each other where they meet:

- the symbol tables: the library's ``.dynsym``, and the full ``.symtab`` of a
  ``-dbg`` package (``libc6-dbg``) when there is one;
- the rebuilt original object matched byte for byte against the shipped
  library (relocated fields, and instructions the linker may relax, left
  out of the comparison): a function found by name, or by its bytes where
  the library is stripped of local symbols (``libcrypto``);
- the matched functions' own relocations read back from the shipped bytes:
  where a ``call`` lands, which GOT slot a ``mov x@GOTPCREL`` reads (or
  what a relaxed ``lea`` points at), which slot holds a TLS offset.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from suture.builder.elfobj import ObjectFile, Rela, Section, SymType, target_offset
from suture.errors import UserspaceBuildError
from suture.userspace.image import R

_GOTPCREL_RELAXABLE = {R.GOTPCREL, R.GOTPCRELX, R.REX_GOTPCRELX}
_WIDTH = {R.R_64: 8, R.PC64: 8}
_KNOWN = {int(r) for r in R}
_JUMP_SLOT, _GLOB_DAT = 7, 6


@dataclass
class ShippedLibrary:
    """The library file as installed, with the symbols known for it."""

    path: Path
    data: bytes
    segments: list[tuple[int, int, int]]  # (vaddr, file offset, file size) of PT_LOADs
    symbols: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # name -> (addr, size)
    got_slots: dict[str, int] = field(default_factory=dict)  # imported name -> GOT slot
    ifuncs: set[str] = field(default_factory=set)

    @classmethod
    def open(cls, path: Path, debug: Path | None) -> ShippedLibrary:
        """Read ``path`` (and its detached debug file ``debug`` when given)."""
        data = path.read_bytes()
        with path.open("rb") as f:
            elf = ELFFile(f)
            segments = [
                (s["p_vaddr"], s["p_offset"], s["p_filesz"])
                for s in elf.iter_segments()
                if s["p_type"] == "PT_LOAD"
            ]
            lib = cls(path, data, segments)
            lib._read_symbols(elf)
            lib._read_got(elf)
        if debug is not None and debug.exists():
            with debug.open("rb") as f:
                lib._read_symbols(ELFFile(f))
        return lib

    def _read_symbols(self, elf: ELFFile) -> None:
        for sec in elf.iter_sections():
            if not isinstance(sec, SymbolTableSection):
                continue
            for s in sec.iter_symbols():
                kind = s["st_info"]["type"]
                if kind == "STT_LOOS":  # STT_GNU_IFUNC
                    self.ifuncs.add(s.name.split("@")[0])
                if s["st_shndx"] == "SHN_UNDEF" or kind not in ("STT_FUNC", "STT_OBJECT",
                                                                "STT_LOOS", "STT_TLS"):  # fmt: skip
                    continue
                name = s.name.split("@")[0]
                entry = (s["st_value"], s["st_size"])
                if entry not in self.symbols.setdefault(name, []):
                    self.symbols[name].append(entry)

    def _read_got(self, elf: ELFFile) -> None:
        for sec in elf.iter_sections():
            if not isinstance(sec, RelocationSection) or sec["sh_link"] == 0:
                continue
            symtab = elf.get_section(sec["sh_link"])
            for r in sec.iter_relocations():
                if r["r_info_type"] in (_JUMP_SLOT, _GLOB_DAT) and r["r_info_sym"]:
                    name = symtab.get_symbol(r["r_info_sym"]).name  # type: ignore[attr-defined]
                    self.got_slots.setdefault(name, r["r_offset"])

    def read(self, vaddr: int, size: int) -> bytes:
        """Bytes of the loaded image at ``vaddr`` (from the file)."""
        for start, offset, filesz in self.segments:
            if start <= vaddr < start + filesz:
                at = offset + vaddr - start
                return self.data[at : at + size]
        return b""

    def text(self) -> tuple[int, bytes]:
        """The executable segment: its vaddr and bytes."""
        start, offset, filesz = self.segments[1] if len(self.segments) > 1 else self.segments[0]
        return start, self.data[offset : offset + filesz]


def _mask(code: bytes, relas: list[Rela]) -> tuple[bytes, list[bool]]:
    keep = [True] * len(code)
    for r in relas:
        width = _WIDTH.get(R(r.type), 4) if r.type in _KNOWN else 4
        lo = r.offset - (2 if r.type in _GOTPCREL_RELAXABLE else 0)
        for i in range(max(lo, 0), min(r.offset + width, len(code))):
            keep[i] = False
    return code, keep


def matches(lib: ShippedLibrary, vaddr: int, sec: Section) -> bool:
    """True when the shipped bytes at ``vaddr`` are ``sec``'s code, relocated fields aside."""
    shipped = lib.read(vaddr, len(sec.data))
    if len(shipped) != len(sec.data):
        return False
    code, keep = _mask(sec.data, sec.relas)
    return all(not k or a == b for a, b, k in zip(code, shipped, keep, strict=True))


def search(lib: ShippedLibrary, sec: Section) -> list[int]:
    """Every place of the executable segment where ``sec``'s code is (relocations aside)."""
    code, keep = _mask(sec.data, sec.relas)
    # The longest run of kept bytes is the needle; each hit is then checked whole.
    best, run_start, best_at = 0, 0, 0
    for i in range(len(code) + 1):
        if i == len(code) or not keep[i]:
            if i - run_start > best:
                best, best_at = i - run_start, run_start
            run_start = i + 1
    if best < 8:
        return []
    base, text = lib.text()
    needle = code[best_at : best_at + best]
    found = []
    at = text.find(needle)
    while at >= 0:
        start = base + at - best_at
        if matches(lib, start, sec):
            found.append(start)
        at = text.find(needle, at + 1)
    return found


def locate(lib: ShippedLibrary, obj: ObjectFile, name: str, sec: Section) -> int:
    """The address of function ``name`` (code ``sec`` of the rebuilt original) in the library.

    Raises:
        UserspaceBuildError: not found, or the shipped code is not what the
            package's own flags give (the build is not reproducible here).
    """
    named = [addr for addr, size in lib.symbols.get(name, []) if size == len(sec.data)]
    hits = [a for a in named if matches(lib, a, sec)]
    if not hits and not named:
        hits = search(lib, sec)
    if len(hits) == 1:
        return hits[0]
    if named and not hits:
        raise UserspaceBuildError(
            f"{name}: the rebuilt original is not the shipped code of {lib.path.name}",
            reason="not-reproducible",
            hint="the toolchain or flags differ from the package's build; nothing was made",
        )
    raise UserspaceBuildError(
        f"{name} is found {len(hits)} times in {lib.path.name}; its place is not certain",
        reason="symbol",
    )


def old_hash(lib: ShippedLibrary, vaddr: int, size: int) -> str:
    """sha256 of the shipped bytes of a function."""
    return hashlib.sha256(lib.read(vaddr, size)).hexdigest()


def harvest(
    lib: ShippedLibrary, obj: ObjectFile, vaddr: int, sec: Section
) -> dict[str, tuple[str, int]]:
    """Names this matched function refers to -> their places, read from the shipped bytes."""
    found: dict[str, tuple[str, int]] = {}
    for r in sec.relas:
        name = referenced_name(obj, r)
        if not name or r.type not in _KNOWN:
            continue
        kind = R(r.type)
        place = vaddr + r.offset
        field_bytes = lib.read(place, 4)
        if len(field_bytes) < 4:
            continue
        (disp,) = struct.unpack("<i", field_bytes)
        target = disp + place - r.addend
        if kind in (R.PC32, R.PLT32):
            found.setdefault(name, ("addr", target))
        elif kind == R.GOTTPOFF:
            found.setdefault(name, ("got", target))
        elif kind in _GOTPCREL_RELAXABLE:
            opcode = lib.read(place - 2, 2)
            relaxed = opcode[:1] == b"\x8d" or opcode == b"\x67\xe8"
            found.setdefault(name, ("addr" if relaxed else "got", target))
    return found


def referenced_name(obj: ObjectFile, r: Rela) -> str:
    """The function or object a relocation of ``obj`` names ("" for anonymous data)."""
    sym = obj.symbols[r.sym]
    if sym.type != SymType.SECTION:
        return sym.name
    sec = obj.symbol_section(sym)
    if sec is None:
        return ""
    if sec.symbol is not None:
        return sec.symbol.name
    inner = obj.symbol_at(sec, target_offset(r))
    return inner.name if inner is not None and not inner.name.startswith(".L") else ""
