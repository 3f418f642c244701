"""Unwind a stopped thread's stack with the ``.eh_frame`` of each module it runs in.

Every frame's return address is found from the call frame information the
compiler (or the assembler's ``.cfi_*`` directives) put in the module:
``PT_GNU_EH_FRAME`` leads to the ``.eh_frame_hdr`` search table, which leads
to the FDE of the function, whose CFA program says where the caller's
registers were saved at this very instruction. Signal frames are unwound
through ``__restore_rt``'s own FDE (augmentation ``S``), so a function
interrupted by a signal handler shows as a frame as well.

Only ELF program headers and the two sections are read (struct; no
pyelftools: the agent runs this). Anything the unwinder does not know (a
module without ``.eh_frame``, JIT code, an unknown CFA opcode or DWARF
operation) makes :func:`frames` raise :class:`Unwindable`; the caller then
falls back to the conservative stack scan. An unwind that ends cleanly
(the outermost frame's return address undefined or zero) is the whole stack.

DWARF 5 §6.4 and the x86-64 psABI §3.7 (register numbers: 0 rax, 1 rdx,
2 rcx, 3 rbx, 4 rsi, 5 rdi, 6 rbp, 7 rsp, 8-15 r8-r15, 16 the return address).
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from suture.userspace import procfs
from suture.userspace import ptrace as pt

PT_LOAD, PT_GNU_EH_FRAME = 1, 0x6474E550
RA, RSP = 16, 7
MAX_FRAMES = 512
_REG_OF = ["rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp",
           "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip"]  # fmt: skip


class Unwindable(Exception):  # noqa: N818 - a condition the caller branches on, not a failure
    """This stack cannot be unwound with certainty: scan it instead."""


def _uleb(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def _sleb(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if byte & 0x40:
                value -= 1 << shift
            return value, at


_ENC_FORMAT = {0x00: "<Q", 0x02: "<H", 0x03: "<I", 0x04: "<Q", 0x09: "<h", 0x0A: "<h",
               0x0B: "<i", 0x0C: "<q"}  # fmt: skip


def _encoded(data: bytes, at: int, enc: int, vaddr_of: Callable[[int], int]) -> tuple[int, int]:
    """A DW_EH_PE-encoded pointer at ``at``: (value, next offset).

    ``vaddr_of`` maps an offset of ``data`` to its virtual address (for
    pc-relative values).
    """
    if enc == 0xFF:
        return 0, at
    fmt = enc & 0x0F
    if fmt == 0x01:
        value, nxt = _uleb(data, at)
    else:
        code = _ENC_FORMAT.get(fmt)
        if code is None:
            raise Unwindable(f"pointer encoding {enc:#x}")
        (value,) = struct.unpack_from(code, data, at)
        nxt = at + struct.calcsize(code)
    app = enc & 0x70
    if app == 0x10:  # pcrel
        value += vaddr_of(at)
    elif app not in (0x00, 0x30):  # absolute, or datarel (only in the header table)
        raise Unwindable(f"pointer application {enc:#x}")
    return value & ((1 << 64) - 1), nxt


@dataclass
class _Cie:
    code_align: int
    data_align: int
    ra_reg: int
    fde_enc: int
    signal: bool
    initial: bytes


@dataclass
class Module:
    """The call frame information of one ELF file, by virtual address."""

    eh_frame: bytes  # .eh_frame's bytes
    eh_vaddr: int  # its virtual address
    table: list[int]  # .eh_frame_hdr's sorted initial locations
    fdes: list[int]  # the matching FDE addresses
    first_vaddr: int  # of the first PT_LOAD, page down: where file offset 0 is mapped
    _cies: dict[int, _Cie] = field(default_factory=dict)
    _rows: dict[int, tuple[_Cie, _Row]] = field(default_factory=dict)  # by vaddr looked up

    @classmethod
    def load(cls, path: Path) -> Module | None:
        """The module's CFI, or None when it has no ``.eh_frame_hdr``."""
        with path.open("rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:
                return None
            (phoff,) = struct.unpack_from("<Q", head, 32)
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
            loads, hdr = [], None
            for i in range(phnum):
                ptype, _fl, off, vaddr, _p, filesz = struct.unpack_from("<IIQQQQ", table, i * 56)
                if ptype == PT_LOAD:
                    loads.append((vaddr, off, filesz))
                elif ptype == PT_GNU_EH_FRAME:
                    hdr = (vaddr, off, filesz)
            if hdr is None:
                return None

            def read_at(vaddr: int, size: int) -> bytes:
                for v, off, filesz in loads:
                    if v <= vaddr < v + filesz:
                        f.seek(off + vaddr - v)
                        return f.read(min(size, v + filesz - vaddr))
                return b""

            hvaddr, hoff, hsize = hdr
            f.seek(hoff)
            h = f.read(hsize)
            if len(h) < 4 or h[0] != 1:
                return None
            ptr_enc, count_enc, table_enc = h[1], h[2], h[3]
            eh_ptr, at = _encoded(h, 4, ptr_enc, lambda o: hvaddr + o)
            count, at = _encoded(h, at, count_enc, lambda o: hvaddr + o)
            if table_enc != 0x3B:  # datarel | sdata4: what every linker writes
                return None
            pairs = struct.unpack_from(f"<{2 * count}i", h, at)
            starts = [hvaddr + v for v in pairs[0::2]]
            fdes = [hvaddr + v for v in pairs[1::2]]
            # .eh_frame runs from eh_ptr to the end of its load segment at most.
            eh = read_at(eh_ptr, 16 << 20)
        first = min(v for v, _o, _s in loads) & ~0xFFF if loads else 0
        return cls(eh, eh_ptr, starts, fdes, first)

    def _cie(self, at: int) -> _Cie:
        if at in self._cies:
            return self._cies[at]
        d = self.eh_frame
        (length,) = struct.unpack_from("<I", d, at)
        end = at + 4 + length
        p = at + 8  # length, CIE id
        version = d[p]
        p += 1
        aug_end = d.index(b"\0", p)
        aug = d[p:aug_end].decode()
        p = aug_end + 1
        code_align, p = _uleb(d, p)
        data_align, p = _sleb(d, p)
        if version == 1:
            ra, p = d[p], p + 1
        else:
            ra, p = _uleb(d, p)
        fde_enc, signal = 0x00, False
        if aug.startswith("z"):
            aug_len, p = _uleb(d, p)
            q = p
            for ch in aug[1:]:
                if ch == "R":
                    fde_enc, q = d[q], q + 1
                elif ch == "P":
                    enc = d[q]
                    _v, q = _encoded(d, q + 1, enc, lambda o: self.eh_vaddr + o)
                elif ch == "L":
                    q += 1
                elif ch == "S":
                    signal = True
                else:
                    raise Unwindable(f"CIE augmentation {aug!r}")
            p += aug_len
        elif aug:
            raise Unwindable(f"CIE augmentation {aug!r}")
        cie = _Cie(code_align, data_align, ra, fde_enc, signal, d[p:end])
        self._cies[at] = cie
        return cie

    def row(self, pc: int) -> tuple[_Cie, _Row] | None:
        """The CIE and the CFA row in force at ``pc`` (a vaddr); None when no FDE covers it.

        Kept: the threads of a process (and the processes of a host) mostly
        wait at the same few instructions.
        """
        cached = self._rows.get(pc)
        if cached is None:
            fde = self.fde(pc)
            if fde is None:
                return None
            cie, begin, program = fde
            cached = (cie, _row_at(cie, begin, program, pc))
            if len(self._rows) < 65536:
                self._rows[pc] = cached
        return cached

    def fde(self, pc: int) -> tuple[_Cie, int, bytes] | None:
        """The CIE, start address and instructions of the FDE covering ``pc`` (a vaddr)."""
        i = bisect.bisect_right(self.table, pc) - 1
        if i < 0:
            return None
        d = self.eh_frame
        at = self.fdes[i] - self.eh_vaddr
        if not 0 <= at < len(d):
            return None
        (length,) = struct.unpack_from("<I", d, at)
        (cie_ptr,) = struct.unpack_from("<I", d, at + 4)
        cie = self._cie(at + 4 - cie_ptr)
        begin, p = _encoded(d, at + 8, cie.fde_enc, lambda o: self.eh_vaddr + o)
        size, p = _encoded(d, p, cie.fde_enc & 0x0F, lambda o: self.eh_vaddr + o)
        if not begin <= pc < begin + size:
            return None
        aug_len, p = _uleb(d, p)
        p += aug_len
        return cie, begin, d[p : at + 4 + length]


# Register rules: ("u",) undefined, ("s",) same value, ("o", n) saved at CFA+n,
# ("v", n) is CFA+n, ("r", reg) in another register, ("e", expr) saved at the
# expression's value, ("ve", expr) is the expression's value.
Rule = tuple[str, object]


@dataclass
class _Row:
    cfa_reg: int = RSP
    cfa_off: int = 8
    cfa_expr: bytes | None = None
    rules: dict[int, Rule] = field(default_factory=dict)

    def copy(self) -> _Row:
        return _Row(self.cfa_reg, self.cfa_off, self.cfa_expr, dict(self.rules))


def _row_at(cie: _Cie, begin: int, program: bytes, pc: int) -> _Row:  # noqa: PLR0912, PLR0915 - one opcode table
    """The CFA rules in force at ``pc``: the CIE's initial program, then the FDE's up to pc."""
    row = _Row()
    initial: _Row | None = None
    stack: list[_Row] = []
    loc = begin
    for code, is_fde in ((cie.initial, False), (program, True)):
        if is_fde:
            initial = row.copy()
        p = 0
        while p < len(code):
            op = code[p]
            p += 1
            high, low = op & 0xC0, op & 0x3F
            if high == 0x40:  # advance_loc
                loc += low * cie.code_align
            elif high == 0x80:  # offset
                n, p = _uleb(code, p)
                row.rules[low] = ("o", n * cie.data_align)
            elif high == 0xC0:  # restore
                row.rules[low] = initial.rules.get(low, ("s", 0)) if initial else ("s", 0)
            elif op == 0x00:  # nop
                pass
            elif op in (0x02, 0x03, 0x04):  # advance_loc1/2/4
                size = {0x02: 1, 0x03: 2, 0x04: 4}[op]
                loc += int.from_bytes(code[p : p + size], "little") * cie.code_align
                p += size
            elif op == 0x05:  # offset_extended
                reg, p = _uleb(code, p)
                n, p = _uleb(code, p)
                row.rules[reg] = ("o", n * cie.data_align)
            elif op == 0x06:  # restore_extended
                reg, p = _uleb(code, p)
                row.rules[reg] = initial.rules.get(reg, ("s", 0)) if initial else ("s", 0)
            elif op == 0x07:  # undefined
                reg, p = _uleb(code, p)
                row.rules[reg] = ("u", 0)
            elif op == 0x08:  # same_value
                reg, p = _uleb(code, p)
                row.rules[reg] = ("s", 0)
            elif op == 0x09:  # register
                reg, p = _uleb(code, p)
                other, p = _uleb(code, p)
                row.rules[reg] = ("r", other)
            elif op == 0x0A:  # remember_state
                stack.append(row.copy())
            elif op == 0x0B:  # restore_state
                if not stack:
                    raise Unwindable("restore_state without remember_state")
                row = stack.pop()
            elif op == 0x0C:  # def_cfa
                row.cfa_reg, p = _uleb(code, p)
                row.cfa_off, p = _uleb(code, p)
                row.cfa_expr = None
            elif op == 0x0D:  # def_cfa_register
                row.cfa_reg, p = _uleb(code, p)
                row.cfa_expr = None
            elif op == 0x0E:  # def_cfa_offset
                row.cfa_off, p = _uleb(code, p)
            elif op == 0x0F:  # def_cfa_expression
                n, p = _uleb(code, p)
                row.cfa_expr, p = code[p : p + n], p + n
            elif op in (0x10, 0x16):  # expression, val_expression
                reg, p = _uleb(code, p)
                n, p = _uleb(code, p)
                row.rules[reg] = ("e" if op == 0x10 else "ve", code[p : p + n])
                p += n
            elif op == 0x11:  # offset_extended_sf
                reg, p = _uleb(code, p)
                n, p = _sleb(code, p)
                row.rules[reg] = ("o", n * cie.data_align)
            elif op == 0x12:  # def_cfa_sf
                row.cfa_reg, p = _uleb(code, p)
                n, p = _sleb(code, p)
                row.cfa_off, row.cfa_expr = n * cie.data_align, None
            elif op == 0x13:  # def_cfa_offset_sf
                n, p = _sleb(code, p)
                row.cfa_off = n * cie.data_align
            elif op == 0x14:  # val_offset
                reg, p = _uleb(code, p)
                n, p = _uleb(code, p)
                row.rules[reg] = ("v", n * cie.data_align)
            elif op == 0x2E:  # GNU_args_size
                _n, p = _uleb(code, p)
            else:
                raise Unwindable(f"CFA opcode {op:#x}")
            if is_fde and loc > pc:  # an advance past pc: the row so far is the one in force
                return row
    return row


@dataclass
class _Memory:
    """The thread's stack read once; other words read one by one."""

    pid: int
    base: int
    data: bytes

    def word(self, address: int) -> int:
        at = address - self.base
        if 0 <= at <= len(self.data) - 8:
            return int(struct.unpack_from("<Q", self.data, at)[0])
        raw = pt.read_memory(self.pid, address, 8)
        if len(raw) != 8:
            raise Unwindable(f"cannot read {address:#x}")
        return int(struct.unpack("<Q", raw)[0])


_MASK = (1 << 64) - 1


def _evaluate(expr: bytes, regs: dict[int, int], mem: _Memory, push: int | None) -> int:
    """A DWARF expression of the kinds .eh_frame holds (PLT entries, signal frames)."""
    stack = [] if push is None else [push]
    p = 0
    while p < len(expr):
        op = expr[p]
        p += 1
        if 0x30 <= op <= 0x4F:  # lit0..lit31
            stack.append(op - 0x30)
        elif 0x70 <= op <= 0x8F:  # breg0..breg31
            n, p = _sleb(expr, p)
            if op - 0x70 not in regs:
                raise Unwindable(f"register {op - 0x70} unknown in this frame")
            stack.append((regs[op - 0x70] + n) & _MASK)
        elif op == 0x06:  # deref
            stack.append(mem.word(stack.pop()))
        elif op == 0x08:  # const1u
            stack.append(expr[p])
            p += 1
        elif op == 0x0A:  # const2u
            stack.append(int.from_bytes(expr[p : p + 2], "little"))
            p += 2
        elif op == 0x0C:  # const4u
            stack.append(int.from_bytes(expr[p : p + 4], "little"))
            p += 4
        elif op == 0x23:  # plus_uconst
            n, p = _uleb(expr, p)
            stack.append((stack.pop() + n) & _MASK)
        elif op in (0x1A, 0x22, 0x1C, 0x24, 0x2A, 0x21):  # and, plus, minus, shl, ge, or
            b, a = stack.pop(), stack.pop()
            stack.append({
                0x1A: a & b, 0x22: (a + b) & _MASK, 0x1C: (a - b) & _MASK,
                0x24: (a << b) & _MASK, 0x2A: int(a >= b), 0x21: a | b,
            }[op])  # fmt: skip
        else:
            raise Unwindable(f"DWARF operation {op:#x}")
    if not stack:
        raise Unwindable("an empty DWARF expression")
    return stack[-1]


@dataclass
class Modules:
    """The CFI of every file a process maps, loaded once per file (shared across processes)."""

    by_key: dict[tuple[int, str], Module | None] = field(default_factory=dict)

    def finder(self, pid: int, mappings: list[procfs.Mapping]) -> Finder:
        """Module lookups in one process's mappings (a sorted index, built once)."""
        return Finder(self, pid, mappings)

    def load(self, pid: int, m: procfs.Mapping, first: procfs.Mapping) -> Module | None:
        """The CFI of the file behind mapping ``m`` (``first``: its mapping at offset 0)."""
        key = (m.inode, m.path)
        if key not in self.by_key:
            link = procfs.PROC / str(pid) / "map_files" / first.range_name
            try:
                self.by_key[key] = Module.load(link)
            except (OSError, ValueError, IndexError, struct.error):
                self.by_key[key] = None
        return self.by_key[key]


class Finder:
    """Which module (and load bias) holds an address, in one process."""

    def __init__(self, modules: Modules, pid: int, mappings: list[procfs.Mapping]) -> None:
        self.modules = modules
        self.pid = pid
        self.mappings = mappings
        self.starts = [m.start for m in mappings]
        self.firsts = {m.path: m for m in reversed(mappings) if m.offset == 0 and m.path}
        self.cache: dict[int, tuple[Module, int] | None] = {}  # by mapping start

    def lookup(self, pc: int) -> tuple[Module, int] | None:
        """The module holding ``pc`` and its load bias (what is added to a vaddr); None: none."""
        i = bisect.bisect_right(self.starts, pc) - 1
        if i < 0 or pc >= self.mappings[i].end:
            return None
        m = self.mappings[i]
        if m.start in self.cache:
            return self.cache[m.start]
        found = None
        first = self.firsts.get(m.path)
        if m.executable and m.path.startswith("/") and first is not None:
            module = self.modules.load(self.pid, m, first)
            if module is not None:
                found = (module, first.start - module.first_vaddr)  # 0: a non-PIE executable
        self.cache[m.start] = found
        return found


def _caller(values: dict[int, int], row: _Row, cfa: int, mem: _Memory) -> dict[int, int]:
    """The caller's registers, by the row's rules (unmentioned ones keep their value)."""
    caller = dict(values)
    caller[RSP] = cfa
    for reg, (kind, arg) in row.rules.items():
        if kind == "o" and isinstance(arg, int):
            caller[reg] = mem.word((cfa + arg) & _MASK)
        elif kind == "v" and isinstance(arg, int):
            caller[reg] = (cfa + arg) & _MASK
        elif kind == "r" and isinstance(arg, int) and arg in values:
            caller[reg] = values[arg]
        elif kind == "e" and isinstance(arg, bytes):
            caller[reg] = mem.word(_evaluate(arg, values, mem, cfa))
        elif kind == "ve" and isinstance(arg, bytes):
            caller[reg] = _evaluate(arg, values, mem, cfa)
        elif kind == "u":
            caller.pop(reg, None)
    return caller


def frames(pid: int, regs: pt.Regs, finder: Finder, stack: tuple[int, bytes]) -> list[int]:
    """The thread's code addresses: its pc, then every frame's return address, outermost last.

    ``stack`` is (address, bytes) of the live stack, read once by the caller.

    Raises:
        Unwindable: some frame cannot be unwound with certainty.
    """
    mem = _Memory(pid, *stack)
    values = {i: int(getattr(regs, name)) for i, name in enumerate(_REG_OF)}
    values[RA] = int(regs.rip)
    out = [values[RA]]
    signal_frame = True  # the innermost pc is exact: no "-1" for its lookup
    for _ in range(MAX_FRAMES):
        pc = values[RA]
        found = finder.lookup(pc)
        if found is None:
            raise Unwindable(f"no module with CFI holds {pc:#x}")
        module, bias = found
        where = pc - bias if signal_frame else pc - bias - 1
        rule_row = module.row(where)
        if rule_row is None:
            raise Unwindable(f"no FDE covers {pc:#x}")
        cie, row = rule_row
        if row.cfa_expr is not None:
            cfa = _evaluate(row.cfa_expr, values, mem, None)
        else:
            if row.cfa_reg not in values:
                raise Unwindable(f"CFA register {row.cfa_reg} unknown")
            cfa = (values[row.cfa_reg] + row.cfa_off) & _MASK
        caller = _caller(values, row, cfa, mem)
        rule = row.rules.get(cie.ra_reg, ("u", 0))
        if rule[0] == "u" or caller.get(RA, 0) == 0:
            return out  # the outermost frame (_start, clone3's thread start)
        signal_frame = cie.signal
        values = caller
        out.append(values[RA])
    raise Unwindable(f"more than {MAX_FRAMES} frames")
