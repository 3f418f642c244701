"""Where the vmlinux image refers to an address: the callers and pointers of a global function.

The builder compiles only the files a fix touches, so relocations cannot say
who else calls a global function. The image extracted from the build's
vmlinuz can: every direct call or jump (``e8``/``e9``/``0f 8x`` and a 32-bit
displacement), every RIP-relative operand and every absolute pointer that
lands on the function's address is found by scanning the loaded sections,
and named with kallsyms (read in a guest booted without KASLR, so its
addresses are the link-time ones the image holds).

A 4-byte pattern also matches by chance, with odds of about 2**-32 at each
position: a spurious hit can only make the builder refuse, never accept.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile

from suture.builder import sections as special
from suture.builder.callers import Reference, RefKind
from suture.builder.slots import Home, Slot
from suture.builder.symbols import Kallsyms

_INIT = frozenset({".init.text"})
_NEVER_RUN = frozenset({".exit.text"})  # built-in exit code: kept for alternatives, never run
_WINDOW = 1 << 15  # bytes scanned per displacement pattern (< 2**16: two patterns at most)
_JCC_LOW, _JCC_HIGH = 0x80, 0x8F
_MODRM_RIP_MASK, _MODRM_RIP = 0xC7, 0x05  # mod=00 rm=101: a RIP-relative operand
# Areas of vmlinux by the kallsyms symbols that bound them, innermost first: what
# the running kernel lets be written there (mark_rodata_ro, free_initmem).
_AREAS = (
    ("__start_ro_after_init", "__end_ro_after_init", Home.RO_AFTER_INIT, ".data..ro_after_init"),
    ("__start_rodata", "__end_rodata", Home.READ_ONLY, ".rodata"),
    ("_sdata", "_edata", Home.WRITABLE, ".data"),
    ("__init_begin", "__init_end", Home.INIT, ".init.data"),
)


@dataclass(frozen=True)
class LoadedSection:
    """One section of the image that is in memory at run time."""

    name: str
    address: int
    data: bytes
    text: bool
    writable: bool = False  # SHF_WRITE in the image (.rodata has it too: see _AREAS)


def _loaded_sections(vmlinux: Path) -> list[LoadedSection]:
    out = []
    with vmlinux.open("rb") as f:
        elf = ELFFile(f)
        for sec in elf.iter_sections():
            if sec["sh_type"] != "SHT_PROGBITS" or not sec["sh_flags"] & 0x2:  # SHF_ALLOC
                continue
            if special.describes_code(sec.name):
                continue
            text = bool(sec["sh_flags"] & 0x4)  # SHF_EXECINSTR
            writable = bool(sec["sh_flags"] & 0x1)  # SHF_WRITE
            out.append(LoadedSection(sec.name, sec["sh_addr"], sec.data(), text, writable))
    return out


def _rel32_hits(data: bytes, base: int, target: int, bias: int) -> list[int]:
    """Offsets p where ``base + p + bias + int32(data[p:p+4]) == target``.

    ``bias`` is 4 for code (a displacement counts from the end of the
    instruction, which it ends) and 0 for tables of ``PREL32`` offsets
    (export entries, PCI fixups), which count from the entry itself.

    In a window of fewer than 2**16 positions the displacement that would hit
    the target takes at most two values of its upper 16 bits, so each window
    is searched (in C, with ``bytes.find``) for those two bytes at ``p + 2``.
    """
    hits = []
    size = len(data)
    for start in range(0, max(size - 3, 0), _WINDOW):
        stop = min(start + _WINDOW, size - 3)
        far, near = target - (base + stop - 1 + bias), target - (base + start + bias)
        if not (far >= -(1 << 31) and near < (1 << 31)):
            continue
        for high in {(far >> 16) & 0xFFFF, (near >> 16) & 0xFFFF}:
            pattern = high.to_bytes(2, "little")
            pos = data.find(pattern, start + 2, stop + 2 + 1)
            while pos != -1:
                p = pos - 2
                disp = int.from_bytes(data[p : p + 4], "little", signed=True)
                if start <= p < stop and base + p + bias + disp == target:
                    hits.append(p)
                pos = data.find(pattern, pos + 1, stop + 2 + 1)
    return sorted(set(hits))


def _pattern_hits(data: bytes, pattern: bytes) -> list[int]:
    hits = []
    pos = data.find(pattern)
    while pos != -1:
        hits.append(pos)
        pos = data.find(pattern, pos + 1)
    return hits


class ImageIndex:
    """The loaded sections of one vmlinux image and its kallsyms, to name what refers where."""

    def __init__(self, sections: list[LoadedSection], ksyms: Kallsyms) -> None:
        self.sections = sections
        entries = sorted(
            (addr, name, kind)
            for name, places in ksyms.by_name.items()
            for addr, kind in places
            if addr
        )
        self._text = [(a, n) for a, n, k in entries if k in "tTwW"]
        self._data = [(a, n) for a, n, k in entries if k not in "tTwWaA"]
        self._text_addrs = [a for a, _ in self._text]
        self._data_addrs = [a for a, _ in self._data]
        self._skip = []
        for lo, hi in special.VMLINUX_TABLE_BOUNDS:
            if ksyms.count(lo) == 1 and ksyms.count(hi) == 1:
                self._skip.append((ksyms.by_name[lo][0][0], ksyms.by_name[hi][0][0]))
        self._areas = [
            (ksyms.by_name[lo][0][0], ksyms.by_name[hi][0][0], home, name)
            for lo, hi, home, name in _AREAS
            if ksyms.count(lo) == 1 and ksyms.count(hi) == 1
        ]

    @classmethod
    def load(cls, vmlinux: Path, ksyms: Kallsyms) -> ImageIndex:
        """Read the loaded sections of ``vmlinux`` (an ELF image, symbols stripped or not)."""
        return cls(_loaded_sections(vmlinux), ksyms)

    def _container(self, address: int, text: bool) -> tuple[int, str]:
        """The symbol whose span holds ``address``: its start and name."""
        addrs, names = (self._text_addrs, self._text) if text else (self._data_addrs, self._data)
        i = bisect.bisect_right(addrs, address) - 1
        return names[i] if i >= 0 else (0, "?")

    def references(self, target: int, own: set[int]) -> list[Reference]:
        """What refers to ``target``, leaving out places inside functions starting at ``own``."""
        refs = []
        for sec in self.sections:
            absolute = set(_pattern_hits(sec.data, target.to_bytes(8, "little")))
            low = _pattern_hits(sec.data, (target & 0xFFFFFFFF).to_bytes(4, "little"))
            hits = [(p, False) for p in sorted(absolute | set(low))]
            bias = 4 if sec.text else 0
            hits += [(p, True) for p in _rel32_hits(sec.data, sec.address, target, bias)]
            for p, relative in hits:
                width = 8 if p in absolute and not relative else 4
                ref = self._classify(sec, p, relative=relative, own=own, width=width)
                if ref is not None and ref not in refs:
                    refs.append(ref)
        return refs

    def _classify(
        self, sec: LoadedSection, p: int, *, relative: bool, own: set[int], width: int = 8
    ) -> Reference | None:
        address = sec.address + p
        if any(lo <= address < hi for lo, hi in self._skip) or sec.name in _NEVER_RUN:
            return None
        if special.is_export_table(sec.name):
            return Reference(sec.name, RefKind.EXPORT)
        start, where = self._container(address, sec.text)
        if not sec.text:
            home, area = self.area(sec, address)
            slot = Slot(where, address - start, area, home, width, relative, address)
            return Reference(where, RefKind.ADDRESS, address=start, slot=slot)
        kind = _text_kind(sec.data, p) if relative else RefKind.ADDRESS
        if kind is None or start in own:
            return None
        if sec.name in _INIT and kind is not RefKind.ADDRESS:
            kind = RefKind.INIT
        elif sec.name != ".text":
            # Alternatives: the site is not where it is stored, so not a caller to patch.
            where = f"{where} ({sec.name})"
            kind = RefKind.ADDRESS if kind is RefKind.CALL else kind
        return Reference(where, kind, address=start)

    def area(self, sec: LoadedSection, address: int) -> tuple[Home, str]:
        """What the running kernel lets be written at ``address`` of ``sec``; the area's name."""
        if sec.name.startswith(".data..percpu"):
            return Home.PERCPU, sec.name
        for lo, hi, home, name in self._areas:
            if lo <= address < hi:
                return home, name
        # Outside the bounded areas: the image's flags (.data_nosave ...), except for
        # .rodata, writable in the ELF only because it holds ro_after_init data.
        writable = sec.writable and not sec.name.startswith(".rodata")
        return (Home.WRITABLE if writable else Home.READ_ONLY), sec.name

    def home(self, address: int) -> tuple[Home, str] | None:
        """What the running kernel lets be written at ``address``, or None outside the image."""
        for sec in self.sections:
            if 0 <= address - sec.address < len(sec.data):
                return self.area(sec, address)
        return None

    def bytes_at(self, address: int, size: int) -> bytes | None:
        """``size`` bytes of any loaded section at ``address`` (code or data), or None."""
        for sec in self.sections:
            start = address - sec.address
            if start >= 0 and start + size <= len(sec.data):
                return sec.data[start : start + size]
        return None

    def code(self, address: int, size: int) -> bytes | None:
        """``size`` bytes of the image's code at ``address``, or None outside its code."""
        for sec in self.sections:
            start = address - sec.address
            if sec.text and start >= 0 and start + size <= len(sec.data):
                return sec.data[start : start + size]
        return None


def _text_kind(data: bytes, p: int) -> RefKind | None:
    """What the 32-bit displacement at ``p`` of code is, or None if it is no operand at all.

    A near call or jump (``e8``/``e9``/``0f 8x``) calls; a RIP-relative
    operand (``lea f(%rip)``) takes the address. Anything else is a constant
    that happens to match, such as the zero bytes of the padding before a
    function or a small immediate near the target.
    """
    op = data[p - 1] if p >= 1 else 0
    if op == 0xE8:
        return RefKind.CALL
    if op == 0xE9 or (p >= 2 and data[p - 2] == 0x0F and _JCC_LOW <= op <= _JCC_HIGH):
        return RefKind.JUMP
    if op & _MODRM_RIP_MASK == _MODRM_RIP:
        return RefKind.ADDRESS
    return None


class KernelStrings:
    """The strings of the build's read-only data, found by their bytes.

    A string literal the patched code uses is carried into the patch module,
    which is not the kernel's read-only data. Code that stores a literal and
    later frees it with kfree_const() (which frees anything outside the
    kernel's .rodata: tracing's hist fields do) would then kfree() the
    module's copy. Where the image holds the same bytes, the patch refers to
    them instead, as the old code did; only a string the kernel lacks is
    carried.
    """

    ANCHOR = "__start_rodata"  # a reference is this symbol plus an offset

    def __init__(self, index: ImageIndex, ksyms: Kallsyms) -> None:
        found = ksyms.by_name.get(self.ANCHOR, [])
        self._anchor = found[0][0] if len(found) == 1 else None
        self._rodata = next((s for s in index.sections if s.name == ".rodata"), None)
        self._seen: dict[tuple[bytes, int], tuple[str, int] | None] = {}

    def find(self, text: bytes, align: int) -> tuple[str, int] | None:
        """The anchor and offset of ``text`` (its NUL included) in .rodata at ``align``; None."""
        key = (text, max(align, 1))
        if key not in self._seen:
            self._seen[key] = self._search(*key)
        return self._seen[key]

    def _search(self, text: bytes, align: int) -> tuple[str, int] | None:
        if self._anchor is None or self._rodata is None or self._rodata.address < self._anchor:
            return None
        data, start = self._rodata.data, 0
        while (pos := data.find(text, start)) >= 0:
            address = self._rodata.address + pos
            if address % align == 0:
                return self.ANCHOR, address - self._anchor
            start = pos + 1
        return None
