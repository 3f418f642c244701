"""Lay a patch object out at an address in a process and relocate it.

The patch object is an ``ET_REL`` file (see :mod:`suture.userspace.build`):
the replacement functions and what they carry (strings, constants, new
data), with relocations against its own sections and against names of the
target library, whose places the manifest gives as offsets from the
library's start (``addr``: the thing itself; ``got``: a slot of the
library's own GOT that holds its address, or its TLS offset).

The image::

    header page   magic, then the record of what was done (JSON), read back by unload/status
    text          executable sections, then one ``jmp *slot(%rip)`` stub per ``got`` call
    rodata        read-only sections, then the patch's own GOT (absolute addresses)
    data          writable sections and .bss (a mapping of their own protections)

Only the ELF reading of :mod:`suture.builder.elfwrite` is used (struct, no pyelftools).
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass, field

from suture.builder import elfwrite
from suture.errors import UserspaceError

PAGE = 4096
MAGIC = b"SUTURE-USERSPACE-PATCH\x02"  # then the state byte
_SYM = struct.Struct("<IBBHQQ")
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4


class R(enum.IntEnum):
    """The x86-64 relocation types a userspace patch object may hold."""

    R_64 = 1
    PC32 = 2
    PLT32 = 4
    GOTPCREL = 9
    R_32 = 10
    R_32S = 11
    GOTTPOFF = 22
    PC64 = 24
    GOTPCRELX = 41
    REX_GOTPCRELX = 42


_GOT_TYPES = {R.GOTPCREL, R.GOTPCRELX, R.REX_GOTPCRELX, R.GOTTPOFF}
_SUPPORTED = set(R)


@dataclass(frozen=True)
class Resolution:
    """Where a name of the target library is, as an offset from the library's start."""

    kind: str  # "addr" or "got"
    offset: int


@dataclass
class PatchObject:
    """The parsed ``ET_REL`` patch object."""

    sections: list[elfwrite.OutSection]  # index i+1 in the file
    symbols: list[tuple[str, int, int, int, int]]  # (name, info, shndx, value, size); [0] null
    relas: dict[int, list[elfwrite.OutRela]] = field(default_factory=dict)  # target section idx

    @classmethod
    def parse(cls, data: bytes) -> PatchObject:
        """Read the object.

        Raises:
            UserspaceError: not an ELF64 relocatable object of the expected shape.
        """
        try:
            sections = elfwrite.read_sections(data)
        except (ValueError, struct.error, IndexError) as e:
            raise UserspaceError(f"the patch object is malformed: {e}") from e
        symtab = next((s for s in sections if s.type == elfwrite.SHT.SYMTAB), None)
        if symtab is None:
            raise UserspaceError("the patch object has no symbol table")
        names = sections[symtab.link - 1].data
        symbols = []
        for off in range(0, len(symtab.data), _SYM.size):
            name, info, _other, shndx, value, size = _SYM.unpack_from(symtab.data, off)
            text = names[name : names.index(b"\0", name)].decode()
            symbols.append((text, info, shndx, value, size))
        relas = {
            s.info: elfwrite.unpack_relas(s.data) for s in sections if s.type == elfwrite.SHT.RELA
        }
        return cls(sections, symbols, relas)

    def symbol(self, name: str) -> tuple[int, int]:
        """(section index, value) of a defined symbol."""
        for n, _info, shndx, value, _size in self.symbols:
            if n == name and shndx != 0:
                return shndx, value
        raise UserspaceError(f"the patch object does not define {name}")


@dataclass
class Image:
    """The bytes to write at ``address`` and where each part went."""

    address: int
    text_size: int  # header page + text + rodata + GOT: mapped read + execute
    data_size: int  # writable part after it (0: none)
    blob: bytes  # everything but the header page's record, from address
    section_addr: dict[int, int]

    @property
    def size(self) -> int:
        """Bytes of address space the image takes."""
        return self.text_size + self.data_size


def _align(value: int, to: int) -> int:
    return (value + to - 1) & ~(to - 1) if to > 1 else value


def plan_size(obj: PatchObject, resolutions: dict[str, Resolution]) -> int:
    """An upper bound of the image's size, to reserve address space before laying it out."""
    total = PAGE
    for s in obj.sections:
        if s.flags & SHF_ALLOC:
            total += _align(s.size if s.size is not None else len(s.data), 16) + s.addralign
    total += 24 * (len(resolutions) + len(obj.symbols)) + 2 * PAGE
    return _align(total, PAGE)


def layout(
    obj: PatchObject,
    address: int,
    base: int,
    resolutions: dict[str, Resolution],
    read_slot: object = None,
) -> Image:
    """Place the object at ``address`` for a library loaded at ``base``, relocated.

    Raises:
        UserspaceError: a relocation type it cannot apply, a name without a
            place, or a reference out of reach (more than 2 GiB away).
    """
    alloc = [(i + 1, s) for i, s in enumerate(obj.sections) if s.flags & SHF_ALLOC]
    groups = (
        [p for p in alloc if p[1].flags & SHF_EXECINSTR],
        [p for p in alloc if not p[1].flags & (SHF_EXECINSTR | SHF_WRITE)],
        [p for p in alloc if p[1].flags & SHF_WRITE],
    )
    pos = PAGE
    placed: dict[int, int] = {}
    for group_no, group in enumerate(groups):
        if group_no == 2:
            stubs_at, got_at = _align(pos, 16), 0
            stubs, got = _slots(obj, resolutions)
            pos = stubs_at + 16 * len(stubs)
            got_at = _align(pos, 8)
            pos = _align(got_at + 8 * len(got), PAGE)
            text_size = pos
        for idx, sec in group:
            pos = _align(pos, max(sec.addralign, 1))
            placed[idx] = pos
            pos += sec.size if sec.type == elfwrite.SHT.NOBITS and sec.size else len(sec.data)
    data_size = _align(pos, PAGE) - text_size
    blob = bytearray(text_size + data_size)
    for idx, off in placed.items():
        sec = obj.sections[idx - 1]
        if sec.type != elfwrite.SHT.NOBITS:
            blob[off : off + len(sec.data)] = sec.data
    addr_of = {idx: address + off for idx, off in placed.items()}
    stub_addr = {name: address + stubs_at + 16 * i for i, name in enumerate(stubs)}
    got_addr = {name: address + got_at + 8 * i for i, name in enumerate(got)}

    def symbol_value(name: str, shndx: int, value: int) -> int:
        if shndx:
            if shndx not in addr_of:
                raise UserspaceError(f"{name} is in a section that is not loaded")
            return addr_of[shndx] + value
        res = resolutions.get(name)
        if res is None:
            raise UserspaceError(f"the patch names {name}, but the manifest does not place it")
        if res.kind == "got":
            return stub_addr.get(name, 0)
        return base + res.offset

    for name, slot in got_addr.items():
        res = resolutions[name]
        struct.pack_into("<Q", blob, slot - address, base + res.offset)
    for name, stub in stub_addr.items():
        slot = base + resolutions[name].offset
        jump = bytes.fromhex("ff25") + struct.pack("<i", _rel32(slot, stub + 6, name))
        blob[stub - address : stub - address + 6] = jump
    for target, relas in obj.relas.items():
        if target not in addr_of:
            continue
        for r in relas:
            name, _info, shndx, value, _size = obj.symbols[r.symbol]
            place = addr_of[target] + r.offset
            where = place - address
            _apply(blob, where, place, r, name, symbol_value(name, shndx, value), got_addr,
                   base, resolutions)  # fmt: skip
    _ = read_slot
    return Image(address, text_size, data_size, bytes(blob), addr_of)


def _slots(obj: PatchObject, resolutions: dict[str, Resolution]) -> tuple[list[str], list[str]]:
    """Names needing a call stub (``got`` places called) and a GOT slot of the patch's own."""
    stubs: list[str] = []
    got: list[str] = []
    for relas in obj.relas.values():
        for r in relas:
            name, _info, shndx, _v, _s = obj.symbols[r.symbol]
            if shndx:
                continue
            res = resolutions.get(name)
            if res is None:
                continue
            if r.type in (R.PLT32, R.PC32) and res.kind == "got" and name not in stubs:
                stubs.append(name)
            own_slot = r.type in _GOT_TYPES and r.type != R.GOTTPOFF and res.kind == "addr"
            if own_slot and name not in got:
                got.append(name)
    return stubs, got


def _rel32(target: int, next_ip: int, name: str) -> int:
    delta = target - next_ip
    if not -(1 << 31) <= delta < 1 << 31:
        raise UserspaceError(f"{name} is out of a 32-bit reach from the patch")
    return delta


def _apply(  # noqa: PLR0917 - the relocation formula's terms
    blob: bytearray,
    where: int,
    place: int,
    r: elfwrite.OutRela,
    name: str,
    sym: int,
    got_addr: dict[str, int],
    base: int,
    resolutions: dict[str, Resolution],
) -> None:
    """Apply one relocation in ``blob`` (S: sym, A: addend, P: place, G: GOT slot)."""
    if r.type not in _SUPPORTED:
        raise UserspaceError(f"relocation type {r.type} against {name} is not supported")
    kind = R(r.type)
    if kind in _GOT_TYPES:
        res = resolutions.get(name)
        if res is not None and res.kind == "got":
            slot = base + res.offset
        elif name in got_addr:
            slot = got_addr[name]
        else:
            raise UserspaceError(f"{name} needs a GOT slot the patch does not have")
        struct.pack_into("<i", blob, where, _rel32(slot + r.addend, place, name))
    elif kind in (R.PC32, R.PLT32):
        if not sym:
            raise UserspaceError(f"{name} has no address in the target")
        struct.pack_into("<i", blob, where, _rel32(sym + r.addend, place, name))
    elif kind == R.PC64:
        struct.pack_into("<q", blob, where, sym + r.addend - place)
    elif kind == R.R_64:
        struct.pack_into("<Q", blob, where, (sym + r.addend) & ((1 << 64) - 1))
    elif kind == R.R_32:
        struct.pack_into("<I", blob, where, sym + r.addend)
    else:
        struct.pack_into("<i", blob, where, sym + r.addend)


class State(enum.Enum):
    """Where a patch region is in its life: one byte of its header page, after the magic.

    Only ``LIVE`` and ``SWITCHING`` regions have (or may have) jumps into them;
    ``STAGED`` ones (mapped, never switched to) and ``RETIRED`` ones (switched
    away from) are unreachable, and the next apply or unload unmaps them.
    """

    STAGED = b"s"
    SWITCHING = b"w"  # the jumps are being written: some may be in place
    LIVE = b"L"
    RETIRED = b"r"


STATE_AT = len(MAGIC)  # the state byte's offset in the header page


def header(record: dict[str, object], state: State = State.STAGED) -> bytes:
    """The header page: the magic, the state, then the record as JSON (the page's size at most)."""
    body = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
    data = MAGIC + state.value + struct.pack("<I", len(body)) + body
    if len(data) > PAGE:
        raise UserspaceError("the patch's record does not fit its header page")
    return data


def parse_header(page: bytes) -> tuple[State, dict[str, object]] | None:
    """The state and record of a header page; None when it is not one."""
    head = len(MAGIC) + 1
    if not page.startswith(MAGIC) or len(page) < head + 4:
        return None
    try:
        state = State(page[STATE_AT : STATE_AT + 1])
    except ValueError:
        return None
    (size,) = struct.unpack_from("<I", page, head)
    try:
        record = json.loads(page[head + 4 : head + 4 + size])
    except ValueError:
        return None
    return (state, record) if isinstance(record, dict) else None
