"""Compare an original and a patched object function by function.

What counts as "the same" follows the kernel's needs, not byte equality:

- names are correlated across GCC's renames: numbered clones and static
  locals (``foo.isra.0`` ~ ``foo.isra.1``, ``__key.264`` ~ ``__key.301``)
  and line-numbered identifiers (``__UNIQUE_ID_ddebug123``, ``__BTF_ID__*``);
- relocations compare by what they point at: a string by its text (with
  ``file.c:LINE`` normalised), a symbol by its correlated name and offset;
- a function whose only change is a ``__LINE__`` immediate passed to a
  warning or might_sleep helper is unchanged.

A caller into which a changed static function was inlined changes too, so
it shows up here on its own. The result names changed and new functions,
functions that cannot be patched (no fentry, ``__init``), and changed data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from suture.builder.elfobj import (
    ObjectFile,
    Rela,
    RelocType,
    Section,
    Symbol,
    SymType,
    target_offset,
)
from suture.builder.fix import LineMap

# Static objects the compiler makes per use site; never correlated as data.
SPECIAL_STATIC = re.compile(
    r"^(__key|__warned|__already_done|__func__|__FUNCTION__|_rs|CSWTCH|_entry|__print_once"
    r"|__UNIQUE_ID_ddebug\d*|descriptor)\b"
)
_MAX_LINE = 1 << 20
_LINE_IN_STRING = re.compile(r"(\.[ch]):\d+")
_LINE_NAMED = re.compile(r"^(__UNIQUE_ID_\w*?|__BTF_ID__\w*?__)\d+$")
# The section of a compiler label's data (-fdata-sections): UBSAN's per-check
# descriptors, ``.data..Lubsan_data263``, numbered in the file's order.
_LABEL_SECTION = re.compile(r"^(\S*\.L[A-Za-z_]+?)\d+$")
_INIT_SECTIONS = (".init.text", ".exit.text", ".head.text")
# The ftrace call's displacement is 1 byte into a function, or 5 after an endbr64 (IBT).
FENTRY_REACH = 9
# Shared sections whose objects are compared one by one (``__read_mostly``,
# ``__ro_after_init``, ``__initdata``, section attributes): data, not metadata.
_SHARED_DATA = (".data", ".rodata", ".init.data", ".init.rodata")
_SHT_NOBITS = 8
_SHF_MERGE = 0x10
_SITE_DEPTH = 3  # per-site statics followed from code: a descriptor, then its __func__

_T = TypeVar("_T")


def mangle(name: str) -> str:
    """The name with compiler counters removed, for correlation.

    ``foo.isra.0`` -> ``foo.isra``; ``__key.264`` -> ``__key``;
    ``__UNIQUE_ID_ddebug372`` -> ``__UNIQUE_ID_ddebug``;
    ``.data..Lubsan_data263`` -> ``.data..Lubsan_data``.
    """
    # GCC's ".N" suffixes first: a descriptor is ``__UNIQUE_ID_ddebug473.50``,
    # and its counter only ends the name once they are gone.
    name = re.sub(r"\.\d+", "", name)
    return _LABEL_SECTION.sub(r"\1", _LINE_NAMED.sub(r"\1", name))


@dataclass(frozen=True)
class FunctionChange:
    """One function the patch must carry."""

    name: str  # the original's name (what the running kernel's kallsyms has)
    status: str  # "changed" or "new"
    section: str
    size: int
    has_fentry: bool  # an ftrace entry: the livepatch core can redirect it
    reason: str = ""


@dataclass
class DiffResult:
    """What changed between two objects."""

    changed: list[FunctionChange] = field(default_factory=list)
    new: list[FunctionChange] = field(default_factory=list)
    line_only: list[str] = field(default_factory=list)
    unpatchable: list[tuple[str, str]] = field(default_factory=list)  # (what, why)
    changed_data: list[str] = field(default_factory=list)
    new_data: list[str] = field(default_factory=list)
    renames: dict[str, str] = field(default_factory=dict)  # patched name -> original name

    @property
    def no_change(self) -> bool:
        """True when the fix changes no code or data in this object."""
        return not (self.changed or self.new or self.unpatchable or self.changed_data)


def _pairs(
    orig: dict[str, _T], patched: dict[str, _T]
) -> Iterator[tuple[str, _T | None, _T | None]]:
    """Correlate by exact name first, then clones by mangled name in order."""
    left = dict(orig)
    right = dict(patched)
    for name in list(left):
        if name in right:
            yield name, left.pop(name), right.pop(name)
    by_key: dict[str, list[str]] = {}
    for name in sorted(right):
        by_key.setdefault(mangle(name), []).append(name)
    for name in sorted(left):
        candidates = by_key.get(mangle(name))
        if candidates:
            yield name, left.pop(name), right.pop(candidates.pop(0))
    for name in sorted(left):
        yield name, left[name], None
    for name in sorted(right):
        yield name, None, right[name]


class _Side:
    """One object plus the helpers to describe what its relocations point at."""

    def __init__(self, obj: ObjectFile, lines: Sequence[LineMap]) -> None:
        self.obj = obj
        self.lines = lines

    def target(self, rela: Rela) -> tuple[object, ...]:
        sym = self.obj.symbols[rela.sym]
        offset = target_offset(rela)
        sec = self.obj.symbol_section(sym)
        pooled = self._pooled(sec, offset + sym.value) if sec is not None else None
        if pooled is not None:
            return pooled
        if sym.type != SymType.SECTION:
            return ("sym", mangle(sym.name), rela.addend)
        if sec is None:
            return ("sec", sym.name, rela.addend)
        if sec.symbol is not None:
            # Through the section symbol: on 6.2+ a function starts after its
            # padding (16 bytes into its section), so the addend counts it.
            return ("sym", mangle(sec.symbol.name), rela.addend - sec.symbol.value)
        inner = self.obj.symbol_at(sec, offset)
        if inner is not None:
            return ("sym", mangle(inner.name), rela.addend - inner.value)
        return ("sec", mangle(sec.name), rela.addend)

    def _pooled(self, sec: Section, start: int) -> tuple[object, ...] | None:
        """A string or constant of a merged section, by its contents; None elsewhere.

        They are reached through the section symbol or a local label (``.LC5``)
        whose offset and number move whenever the fix adds a string or constant
        above them.
        """
        if sec.is_strings:
            text = self.obj.string_at(sec, start)
            return ("str", _LINE_IN_STRING.sub(r"\1:LINE", text))
        if sec.flags & _SHF_MERGE and sec.entsize:  # .rodata.cst2, .rodata.cst16 ...
            return ("const", sec.data[start : start + sec.entsize])
        return None

    def site_object(self, rela: Rela) -> tuple[Symbol, _Code] | None:
        """The per-site static a relocation points at, with its contents; else None.

        Per-site statics (a dynamic debug descriptor, ``__func__``, a ratelimit
        state, a ``WARN_ONCE`` flag, a switch table) are copied with the code
        that uses them, so their contents are part of that code: they are
        compared with it, not by name only.
        """
        sym = self.obj.symbols[rela.sym]
        sec = self.obj.symbol_section(sym)
        if sec is None or sec.is_strings:
            return None
        if sym.type == SymType.SECTION and sec.symbol is None and _LABEL_SECTION.match(sec.name):
            # A label's own data section (a UBSAN check's descriptor: the
            # source place and the types): by its contents, as numbers move.
            return sym, _Code(sec.data, sec.relas)
        if sym.type == SymType.SECTION:
            named = sec.symbol or self.obj.symbol_at(sec, target_offset(rela))
        else:
            named = sym
        if named is None or named.type != SymType.OBJECT or not SPECIAL_STATIC.match(named.name):
            return None
        return named, _object_code(sec, named)

    def target_name(self, rela: Rela) -> str:
        kind, *rest = self.target(rela)
        return str(rest[0]) if kind == "sym" else ""

    def has_fentry(self, relas: list[Rela], start: int = 0) -> bool:
        return any(
            start <= r.offset <= start + FENTRY_REACH and self.target_name(r) == "__fentry__"
            for r in relas
        )


def _masked(data: bytes, relas: list[Rela]) -> bytearray:
    """The code with relocated fields zeroed (their values come from the linker)."""
    out = bytearray(data)
    for r in relas:
        width = 8 if r.type in (RelocType.R_64, RelocType.PC64) else 4
        out[r.offset : r.offset + width] = bytes(width)
    return out


@dataclass(frozen=True)
class _Code:
    """Bytes and relocations of one function or object, offsets relative to its start."""

    data: bytes
    relas: list[Rela]


def _object_code(sec: Section, sym: Symbol) -> _Code:
    """The bytes and relocations of one object of a section, offsets relative to its start."""
    end = sym.value + sym.size
    data = bytes(sym.size) if sec.type_num == _SHT_NOBITS else sec.data[sym.value : end]
    relas = [
        Rela(r.offset - sym.value, r.type, r.sym, r.addend)
        for r in sec.relas
        if sym.value <= r.offset < end
    ]
    return _Code(data, relas)


def _compare_code(
    a: _Side, code_a: _Code, b: _Side, code_b: _Code, *, data: bool = False, depth: int = 0
) -> str:
    """Empty when the code is the same, "line" when only __LINE__ moved, else a reason.

    ``data``: the bytes are an object's, where a line number may share a word
    with other bit fields (a dynamic debug descriptor's ``lineno:18``).
    """
    a_data, a_relas, b_data, b_relas = code_a.data, code_a.relas, code_b.data, code_b.relas
    if len(a_data) != len(b_data):
        return f"size {len(a_data)} -> {len(b_data)}"
    refs = _compare_refs(a, a_relas, b, b_relas, depth)
    if refs not in ("", "line"):
        return refs
    ma, mb = _masked(a_data, a_relas), _masked(b_data, b_relas)
    if ma == mb:
        # A line moved only in per-site data (a descriptor): the code itself,
        # which is all the patch would replace, is the same.
        return refs if data else ""
    diffs = [i for i in range(len(ma)) if ma[i] != mb[i]]
    if all(_is_line_immediate(ma, mb, i, a.lines, fields=data) for i in diffs):
        return "line"
    return f"{'data' if data else 'code'} differs at +{diffs[0]:#x}"


# A call or jump to a local goes through its section (PC32), to a global through
# the PLT (PLT32): the kernel links both to the same displacement.
_LINKED_AS: dict[int, int] = {RelocType.PLT32: RelocType.PC32}


def _compare_refs(a: _Side, a_relas: list[Rela], b: _Side, b_relas: list[Rela], depth: int) -> str:
    """Compare relocations in order: "" or "line" when they point at the same things."""
    if len(a_relas) != len(b_relas):
        return "different references"
    verdict = ""
    for ra, rb in zip(a_relas, b_relas, strict=True):
        same_type = _LINKED_AS.get(ra.type, ra.type) == _LINKED_AS.get(rb.type, rb.type)
        if ra.offset != rb.offset or not same_type or a.target(ra) != b.target(rb):
            return f"reference at +{ra.offset:#x} differs"
        site = _compare_site(a, ra, b, rb, depth)
        if site not in ("", "line"):
            return site
        verdict = verdict or site
    return verdict


def _compare_site(a: _Side, ra: Rela, b: _Side, rb: Rela, depth: int) -> str:
    """Compare the per-site statics two correlated relocations point at ("" if none)."""
    if depth >= _SITE_DEPTH:
        return ""
    site_a, site_b = a.site_object(ra), b.site_object(rb)
    if site_a is None or site_b is None:
        return "" if site_a is site_b else f"reference at +{ra.offset:#x} differs"
    verdict = _compare_code(a, site_a[1], b, site_b[1], data=True, depth=depth + 1)
    if verdict in ("", "line"):
        return verdict
    return f"{site_a[0].name}, used at +{ra.offset:#x}, differs ({verdict})"


def _is_line_immediate(
    ma: bytearray, mb: bytearray, pos: int, lines: Sequence[LineMap], *, fields: bool = False
) -> bool:
    """``pos`` lies in a 32-bit constant that moved exactly as the fix moved that line.

    ``__LINE__`` passed to WARN, might_sleep or a filesystem's error helper
    changes when code above it moves; the fix's own line map says where each
    old line went, so ``L -> new_line(L)`` is a moved line number, and any
    other change of a constant is a real change. With ``fields``, the line
    may be the low bits of a word whose other bits stay (a bit field).
    """
    for start in range(max(0, pos - 3), min(pos, len(ma) - 4) + 1):
        old = int.from_bytes(ma[start : start + 4], "little")
        new = int.from_bytes(mb[start : start + 4], "little")
        if old == new:
            continue
        widths = range((old ^ new).bit_length(), 33) if fields else (32,)
        for width in widths:
            mask = (1 << width) - 1
            low_old, low_new = old & mask, new & mask
            if (
                old >> width == new >> width
                and 0 < low_old < _MAX_LINE
                and any(m.new_line(low_old) == low_new for m in lines)
            ):
                return True
    return False


def _function_result(
    result: DiffResult, name: str, pair: tuple[_Side, Section | None, _Side, Section | None]
) -> None:
    a, sa, b, sb = pair
    if sb is None:
        return  # removed: nothing calls it in the new code, the old copy stays
    if sa is None:
        result.new.append(
            FunctionChange(name, "new", sb.name, sb.code_size, has_fentry=True, reason="new")
        )
        return
    code_a, code_b = _Code(sa.data, sa.relas), _Code(sb.data, sb.relas)
    if a.has_fentry(sa.relas, sa.start) != b.has_fentry(sb.relas, sb.start):
        # The kernel's ``inline`` is notrace: a static inline GCC emitted out
        # of line, that the fix makes a plain function (to call it from
        # another file), gains an ftrace entry (and an endbr64) and nothing
        # else. Its code is the same without them.
        code_a, code_b = _without_entry(a, sa), _without_entry(b, sb)
    verdict = _compare_code(a, code_a, b, code_b)
    if verdict == "line":
        result.line_only.append(name)
    elif verdict:
        result.changed.append(
            FunctionChange(
                name,
                "changed",
                sa.name,
                sa.code_size,
                a.has_fentry(sa.relas, sa.start),
                reason=verdict,
            )
        )


_ENDBR64 = bytes.fromhex("f30f1efa")
_CALL_SIZE = 5


def _without_entry(side: _Side, sec: Section) -> _Code:
    """A function's section without its entry's endbr64 and ftrace call, where it has them."""
    cut = sec.start + (len(_ENDBR64) if sec.data[sec.start :].startswith(_ENDBR64) else 0)
    fentry = [r for r in sec.relas if r.offset == cut + 1 and side.target_name(r) == "__fentry__"]
    end = cut + _CALL_SIZE if fentry else cut
    size = end - sec.start
    relas = [
        r if r.offset < sec.start else Rela(r.offset - size, r.type, r.sym, r.addend)
        for r in sec.relas
        if not sec.start <= r.offset < end
    ]
    return _Code(sec.data[: sec.start] + sec.data[end:], relas)


def _unbundled_functions(obj: ObjectFile) -> dict[str, tuple[Section, Symbol]]:
    """Functions that share a section (``.init.text`` and friends), by name."""
    found = {}
    for sym in obj.symbols:
        sec = obj.symbol_section(sym)
        if sym.type == SymType.FUNC and sec is not None and sec.symbol is not sym:
            found[sym.name] = (sec, sym)
    return found


def _compare_unbundled(a: _Side, b: _Side, result: DiffResult) -> None:
    ua, ub = _unbundled_functions(a.obj), _unbundled_functions(b.obj)
    for name, (sec, sym) in ua.items():
        if name not in ub:
            continue
        verdict = _compare_code(a, _object_code(sec, sym), b, _object_code(*ub[name]))
        if verdict and verdict != "line":
            why = (
                "__init/__exit code runs once and is freed; it cannot be live patched"
                if sec.name.startswith(_INIT_SECTIONS)
                else f"it is not in a section of its own ({sec.name})"
            )
            result.unpatchable.append((name, why))


def _note_rename(result: DiffResult, sa: Section | None, sb: Section | None) -> None:
    if sa and sb and sa.symbol and sb.symbol and sa.symbol.name != sb.symbol.name:
        result.renames[sb.symbol.name] = sa.symbol.name


def _data_objects(obj: ObjectFile) -> dict[str, Section]:
    return {
        sec.symbol.name: sec
        for sec in obj.sections
        if sec.symbol is not None
        and sec.symbol.type == SymType.OBJECT
        and not SPECIAL_STATIC.match(sec.symbol.name)
    }


def _unbundled_data(obj: ObjectFile) -> dict[str, tuple[Section, Symbol]]:
    """Objects that share a data section with others, by name."""
    found = {}
    for sym in obj.symbols:
        sec = obj.symbol_section(sym)
        if (
            sym.type == SymType.OBJECT
            and sym.size
            and sec is not None
            and sec.symbol is not sym
            and sec.name.startswith(_SHARED_DATA)
            and not sec.is_strings
            and not sym.name.startswith(".L")
            and not SPECIAL_STATIC.match(sym.name)
        ):
            found[sym.name] = (sec, sym)
    return found


def _data_pairs(
    a: _Side, b: _Side, orig: dict[str, Section], patched: dict[str, Section]
) -> Iterator[tuple[str, Section | None, Section | None]]:
    """Data objects correlated by content where GCC's numbering moved, else by name.

    A fix that adds an ``NL_SET_ERR_MSG`` adds a ``__msg`` static, and every
    ``__msg.N`` after it in the file is numbered one higher: by name the
    fix would change them all (and the one whose number it takes could not
    be carried). A numbered local whose bytes changed under its name goes to
    the patched one of the same bytes instead, when there is one.
    """

    def same(x: Section, y: Section) -> bool:
        return _compare_code(a, _Code(x.data, x.relas), b, _Code(y.data, y.relas), data=True) in (
            "",
            "line",
        )

    left, right = dict(orig), dict(patched)
    moved = [n for n in left if mangle(n) != n and not (n in right and same(left[n], right[n]))]
    spare = [n for n in right if mangle(n) != n and not (n in left and same(left[n], right[n]))]
    for name in moved:
        match = next(
            (m for m in spare if mangle(m) == mangle(name) and same(left[name], right[m])), None
        )
        if match is not None:
            spare.remove(match)
            yield name, left.pop(name), right.pop(match)
    yield from _pairs(left, right)


def _compare_data(a: _Side, b: _Side, result: DiffResult) -> None:
    for name, da, db in _data_pairs(a, b, _data_objects(a.obj), _data_objects(b.obj)):
        _note_rename(result, da, db)
        if da is None:
            result.new_data.append(name)
        elif db is not None and _compare_code(
            a, _Code(da.data, da.relas), b, _Code(db.data, db.relas), data=True
        ) not in ("", "line"):
            # Only a moved __LINE__ in data (a site table) is no change: the
            # kernel's copy goes with the code the kernel runs.
            result.changed_data.append(name)
    # A change inside a shared section (a __read_mostly struct, say) is a change
    # of that object: without this it would go unnoticed.
    for name, ua, ub in _pairs(_unbundled_data(a.obj), _unbundled_data(b.obj)):
        if ua is None or ub is None:
            continue
        if _compare_code(a, _object_code(*ua), b, _object_code(*ub), data=True) not in ("", "line"):
            result.changed_data.append(name)


def _fold_cold_parts(result: DiffResult, a: _Side, functions: dict[str, Section]) -> None:
    """A changed ``foo.cold`` (no fentry: only jumped to from ``foo``) makes ``foo`` changed."""
    names = {c.name for c in result.changed}
    for cold in [c for c in result.changed if c.name.endswith(".cold")]:
        result.changed.remove(cold)
        parent = cold.name.removesuffix(".cold")
        sec = functions.get(parent)
        if parent not in names and sec is not None:
            names.add(parent)
            result.changed.append(
                FunctionChange(
                    parent, "changed", sec.name, sec.code_size, a.has_fentry(sec.relas, sec.start),
                    reason=f"its cold part changed ({cold.reason})",
                )
            )  # fmt: skip
    result.new = [n for n in result.new if not n.name.endswith(".cold")]


def diff_objects(
    orig: ObjectFile, patched: ObjectFile, lines: LineMap | Sequence[LineMap] = ()
) -> DiffResult:
    """Compare two compilations of one translation unit.

    ``lines`` are the line maps of the fix's files that the unit's code comes
    from: its own, and those of the headers the fix changes (an inline
    function's ``__LINE__`` is its header's).
    """
    maps = [lines] if isinstance(lines, LineMap) else list(lines)
    a, b = _Side(orig, maps), _Side(patched, maps)
    result = DiffResult()
    functions = orig.functions()
    for name, sa, sb in _pairs(functions, patched.functions()):
        _function_result(result, name, (a, sa, b, sb))
        _note_rename(result, sa, sb)
    _fold_cold_parts(result, a, functions)
    _compare_unbundled(a, b, result)
    _compare_data(a, b, result)
    return result
