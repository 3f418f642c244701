"""Make the patch object: the changed functions of a patched object and what they need.

Included: the sections of the changed and new functions; the string literals,
compiler-private tables (switch jump tables) and per-site statics
(``__func__``, ``__warned``, ratelimit states) they use; new data; and the
entries of the x86-64 special sections that describe included code (bug
table, exception table, ORC unwind, alternatives, return/retpoline sites,
smp locks, mcount). Everything else they reference (unchanged functions,
existing data) becomes an undefined symbol resolved against the running
kernel: by the module loader when exported, by the livepatch core (klp
relocations, written after the final link) when not.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from suture.builder import elfwrite as ew
from suture.builder.differ import SPECIAL_STATIC
from suture.builder.elfobj import ObjectFile, Rela, Section, SymBind, Symbol, SymType, target_offset
from suture.builder.sections import ENTRY_TABLES, WHOLE, EntryTable
from suture.errors import BuildError, StaticKeyError

# A string's bytes (NUL included) and alignment -> where the kernel holds them:
# a symbol and an offset from it (image_refs.KernelStrings.find); None: nowhere.
StringLookup = Callable[[bytes, int], tuple[str, int] | None]

NEW_PREFIX = "__suture_new_"
KLP_PREFIX = "__suture_klp_"


def new_symbol_name(function: str, tag: str = "") -> str:
    """The module's global name for the new code of ``function`` (dots are not C).

    ``tag`` tells apart the patch objects of several files linked into one
    module, whose static functions may share names.
    """
    return NEW_PREFIX + tag + re.sub(r"[^A-Za-z0-9_]", "_", function)


@dataclass
class PatchObject:
    """The extracted object and what the rest of the build needs to know about it."""

    data: bytes
    functions: dict[str, str]  # kernel function name -> global symbol of its new code
    # Undefined symbol of the patch object -> kernel name, resolved by the livepatch core.
    klp_symbols: dict[str, str] = field(default_factory=dict)
    exported: set[str] = field(default_factory=set)  # resolved by the module loader


class _Extractor:
    def __init__(
        self,
        obj: ObjectFile,
        functions: dict[str, str],
        *,
        renames: dict[str, str],
        exported: set[str],
        new_data: set[str],
        objname: str,
        tag: str,
        redirects: dict[str, str],
        shared_data: set[str],
        objtool_at_link: bool,
        kernel_strings: StringLookup | None,
    ) -> None:
        self.obj = obj
        self.kernel_strings = kernel_strings
        self.redirects = redirects
        self.objtool_at_link = objtool_at_link
        self.shared_data = shared_data  # carried objects other patch objects use: named globally
        self.objname = objname
        self.tag = tag
        self.new_data = new_data  # objects the fix adds: the patch carries them
        self.functions = functions  # name in this object -> kernel name
        self.renames = renames
        self.exported = exported
        self.included: set[int] = set()
        self.externals: dict[str, int] = {}  # kernel name -> output symbol slot
        self.klp: dict[str, str] = {}  # undefined symbol -> kernel name
        self.used_exports: set[str] = set()
        self.substitutes: dict[str, str] = {}  # unexported static call key -> trampoline

    # -- what to include ---------------------------------------------------

    def run(self) -> None:
        funcs = self.obj.functions()
        for name in self.functions:
            sec = funcs.get(name)
            if sec is None:
                raise BuildError(f"{name} has no section of its own in {self.obj.path.name}")
            self._include(sec)
            cold = funcs.get(name + ".cold")
            if cold is not None:
                self._include(cold)
        # Objects other patch objects use are carried even if nothing here uses them.
        for sym in self.obj.symbols:
            home = self.obj.symbol_section(sym)
            kernel = self.renames.get(sym.name, sym.name)
            if sym.type == SymType.OBJECT and home is not None and kernel in self.shared_data:
                self._include(home)

    def _include(self, sec: Section) -> None:
        if sec.index in self.included:
            return
        self.included.add(sec.index)
        for rela in sec.relas:
            self._classify(rela)

    def _classify(self, rela: Rela) -> None:
        sym = self.obj.symbols[rela.sym]
        sec = self.obj.symbol_section(sym)
        if sec is None or sec.index in self.included:
            return
        named = self._named(sym, sec, rela)
        if self._carried(sec, named):
            self._include(sec)

    def _carried(self, sec: Section, named: Symbol | None) -> bool:
        """True when the referenced section is copied into the patch rather than linked."""
        if sec.is_strings or sec.name.startswith(WHOLE):
            return True
        if named is None or (named.name.startswith(".L") and named.bind == SymBind.LOCAL):
            # Compiler-private data (switch tables, anonymous constants; GCC's
            # .LC labels when it keeps them in the symbol table).
            return not sec.is_text
        if named.type == SymType.OBJECT and (
            SPECIAL_STATIC.match(named.name) or named.name in self.new_data
        ):
            return True
        return named.name in self.functions

    def _named(self, sym: Symbol, sec: Section, rela: Rela) -> Symbol | None:
        """The function or object a relocation points at (through a section symbol too)."""
        if sym.type != SymType.SECTION:
            return sym
        if sec.symbol is not None:
            return sec.symbol
        return self.obj.symbol_at(sec, target_offset(rela))

    # -- writing -------------------------------------------------------------

    def build(self) -> bytes:
        tables = self._filtered_tables()
        order = sorted(self.included)
        out_index = {idx: pos + 1 for pos, idx in enumerate(order)}
        sections: list[ew.OutSection] = []
        for idx in order:
            sec = self.obj.sections[idx]
            data, _ = tables.get(idx, (sec.data, None))
            nobits = sec.type_num == ew.SHT.NOBITS
            sections.append(
                ew.OutSection(
                    sec.name, sec.type_num, sec.flags, data, sec.addralign, sec.entsize,
                    size=sec.size if nobits else None,
                )
            )  # fmt: skip
        local_syms, global_syms = self._symbols(order, out_index)
        symbols = local_syms + global_syms
        slot = {id(s): i + 1 for i, s in enumerate(symbols)}
        strtab = ew.StringTable()
        symtab_index = len(sections) + 1
        rela_sections = []
        for idx in order:
            relas = self._out_relas(idx, tables, slot, out_index)
            if relas:
                sec = self.obj.sections[idx]
                rela_sections.append(
                    ew.OutSection(
                        ".rela" + sec.name, ew.SHT.RELA, ew.SHF.INFO_LINK, ew.pack_relas(relas),
                        8, 24, link=symtab_index, info=out_index[idx],
                    )
                )  # fmt: skip
        symdata = ew.pack_symbols(symbols, strtab)
        sections.append(
            ew.OutSection(".symtab", ew.SHT.SYMTAB, 0, symdata, 8, 24,
                          link=symtab_index + 1, info=len(local_syms) + 1)
        )  # fmt: skip
        sections.append(ew.OutSection(".strtab", ew.SHT.STRTAB, 0, bytes(strtab.data)))
        sections.extend(rela_sections)
        return ew.write(sections)

    def _symbols(
        self, order: list[int], out_index: dict[int, int]
    ) -> tuple[list[ew.OutSymbol], list[ew.OutSymbol]]:
        self._section_syms = {
            idx: ew.OutSymbol("", SymType.SECTION, out_index[idx]) for idx in order
        }
        local_syms = list(self._section_syms.values())
        global_syms = []
        for sym in self.obj.symbols:
            if sym.shndx not in out_index or sym.type not in (SymType.FUNC, SymType.OBJECT):
                continue
            home = self.obj.symbol_section(sym)
            if sym.name in self.functions and home is not None and home.symbol is sym:
                kernel = self.functions[sym.name]
                global_syms.append(
                    ew.OutSymbol(new_symbol_name(kernel, self.tag),
                                 (SymBind.GLOBAL << 4) | SymType.FUNC,
                                 out_index[sym.shndx], sym.value, sym.size)
                )  # fmt: skip
            elif sym.type == SymType.OBJECT and self.renames.get(sym.name, sym.name) in (
                self.shared_data
            ):
                kernel = self.renames.get(sym.name, sym.name)
                global_syms.append(
                    ew.OutSymbol(new_symbol_name(kernel, self.tag),
                                 (SymBind.GLOBAL << 4) | SymType.OBJECT,
                                 out_index[sym.shndx], sym.value, sym.size)
                )  # fmt: skip
            else:
                local_syms.append(
                    ew.OutSymbol(
                        self._local_name(sym), sym.type, out_index[sym.shndx], sym.value, sym.size
                    )
                )
        self._external_syms: dict[str, ew.OutSymbol] = {}
        return local_syms, global_syms + self._collect_externals()

    def _local_name(self, sym: Symbol) -> str:
        """A local symbol's name in the patch: a carried function's cold part follows it.

        objtool (run on the module's link) finds the function a ``foo.cold``
        belongs to by the name before ``.cold``, and fails the build when no
        such function is there; the carried ``foo`` is named
        ``new_symbol_name(foo)`` in the patch, so its cold part is too.
        """
        parent = sym.name.removesuffix(".cold")
        if sym.type == SymType.FUNC and parent != sym.name and parent in self.functions:
            return new_symbol_name(self.functions[parent], self.tag) + ".cold"
        return sym.name

    def _collect_externals(self) -> list[ew.OutSymbol]:
        for idx in sorted(self.included):
            for rela in self._relas_of(idx):
                in_kernel = self._kernel_string(rela)
                external = self._external(rela)
                target = in_kernel[0] if in_kernel else external[0] if external else ""
                if target in self.redirects:
                    # Carried by another file's patch object: linked within the module.
                    self._external_syms.setdefault(
                        target,
                        ew.OutSymbol(
                            self.redirects[target],
                            (SymBind.GLOBAL << 4) | SymType.NOTYPE,
                            ew.SHN_UNDEF,
                        ),
                    )
                elif target and target not in self._external_syms:
                    # An unexported name gets a name of its own in the module: the
                    # module's link defines some of the same names for itself
                    # (__this_module, which the patched code means as its module's),
                    # and a tag keeps several files' same-named statics apart.
                    name = target if target in self.exported else KLP_PREFIX + self.tag + target
                    self._external_syms[target] = ew.OutSymbol(
                        name, (SymBind.GLOBAL << 4) | SymType.NOTYPE, ew.SHN_UNDEF
                    )
                    if target in self.exported:
                        self.used_exports.add(target)
                    else:
                        self.klp[name] = target
        return list(self._external_syms.values())

    def _kernel_string(self, rela: Rela) -> tuple[str, int] | None:
        """Where the image holds the string a relocation points at (anchor, offset); None."""
        if self.kernel_strings is None:
            return None
        sym = self.obj.symbols[rela.sym]
        sec = self.obj.symbol_section(sym)
        if sec is None or not sec.is_strings:
            return None
        start = target_offset(rela) + (0 if sym.type == SymType.SECTION else sym.value)
        end = sec.data.find(b"\0", start)
        if start < 0 or end < 0:
            return None
        return self.kernel_strings(sec.data[start : end + 1], sec.addralign)

    def _relas_of(self, idx: int) -> list[Rela]:
        return self._kept_relas.get(idx, self.obj.sections[idx].relas)

    def _external(self, rela: Rela) -> tuple[str, Symbol] | None:
        """The kernel name a relocation resolves against, and the symbol it names.

        None when the relocation points into the patch itself.
        """
        sym = self.obj.symbols[rela.sym]
        sec = self.obj.symbol_section(sym)
        if sec is not None and sec.index in self.included:
            return None
        named = sym if sec is None else self._named(sym, sec, rela)
        if named is None:
            raise BuildError(
                f"a reference from the patched code into {sec.name if sec else '?'} "
                "has no symbol to resolve against the kernel",
            )
        name = self.renames.get(named.name, named.name)
        return self.substitutes.get(name, name), named

    def _out_relas(
        self,
        idx: int,
        tables: dict[int, tuple[bytes, int | None]],
        slot: dict[int, int],
        out_index: dict[int, int],
    ) -> list[ew.OutRela]:
        out = []
        for rela in self._relas_of(idx):
            sym = self.obj.symbols[rela.sym]
            sec = self.obj.symbol_section(sym)
            in_kernel = self._kernel_string(rela)
            if in_kernel is not None:
                anchor, offset = in_kernel
                bias = rela.addend - target_offset(rela)  # a PC-relative field's -4
                ext = self._external_syms[anchor]
                out.append(ew.OutRela(rela.offset, rela.type, slot[id(ext)], offset + bias))
                continue
            if sec is not None and sec.index in self.included:
                target = self._section_syms[sec.index]
                addend = rela.addend + (0 if sym.type == SymType.SECTION else sym.value)
                out.append(ew.OutRela(rela.offset, rela.type, slot[id(target)], addend))
                continue
            external = self._external(rela)
            if external is None:  # pragma: no cover - handled above
                continue
            name, named = external
            ext = self._external_syms[name]
            addend = rela.addend - (named.value if sym.type == SymType.SECTION else 0)
            out.append(ew.OutRela(rela.offset, rela.type, slot[id(ext)], addend))
        return out

    def _filtered_tables(self) -> dict[int, tuple[bytes, int | None]]:
        """Entries of special sections that describe included code, and their relocations."""
        self._kept_relas: dict[int, list[Rela]] = {}
        result: dict[int, tuple[bytes, int | None]] = {}
        code = set(self.included)
        for sec in self.obj.sections:
            table = ENTRY_TABLES.get(sec.name)
            if table is None or not sec.relas or (self.objtool_at_link and table.by_objtool):
                continue
            size, anchor = _entry_size(self.obj, sec, table), table.anchor
            by_offset = {r.offset: r for r in sec.relas}
            keep = []
            for i in range(len(sec.data) // size):
                rela = by_offset.get(i * size + anchor)
                target = self.obj.symbols[rela.sym] if rela else None
                if target is not None and target.shndx in code:
                    keep.append(i)
            if not keep:
                continue
            keep = self._check_keys(sec, keep, size, by_offset)
            if not keep:
                continue
            result[sec.index] = (b"".join(sec.data[i * size : (i + 1) * size] for i in keep), None)
            relas = []
            for new_i, old_i in enumerate(keep):
                for off in range(size):
                    r = by_offset.get(old_i * size + off)
                    if r is not None:
                        relas.append(Rela(new_i * size + off, r.type, r.sym, r.addend))
            self._kept_relas[sec.index] = relas
            self.included.add(sec.index)
            for r in relas:
                self._classify(r)
            parallel = table.parallel
            if parallel is not None and parallel[0] in self.obj.by_name:
                other = self.obj.by_name[parallel[0]]
                psize = parallel[1]
                data = b"".join(other.data[i * psize : (i + 1) * psize] for i in keep)
                result[other.index] = (data, None)
                self._kept_relas[other.index] = []
                self.included.add(other.index)
        return result

    def _check_keys(
        self, sec: Section, keep: list[int], size: int, by_offset: dict[int, Rela]
    ) -> list[int]:
        """The entries of a keyed table the patch can keep; refuse what it cannot have."""
        key_at = ENTRY_TABLES[sec.name].key
        if key_at is None:
            return keep
        kept = []
        for i in keep:
            rela = by_offset.get(i * size + key_at)
            sym = self.obj.symbols[rela.sym] if rela else None
            ksec = self.obj.symbol_section(sym) if sym else None
            named = self._named(sym, ksec, rela) if sym and ksec and rela else sym
            name = named.name if named else "?"
            if name in self.exported:
                kept.append(i)
                continue
            if ksec is not None and self._carried(ksec, named):
                self._include(ksec)  # a key of the patch's own (dynamic debug descriptors)
                kept.append(i)
                continue
            # A module names a static call it may not update by its exported
            # trampoline; the kernel finds the key from it (static_call_add_module),
            # as objtool arranges for modules. The flag bits stay in the addend.
            tramp = "__SCT__" + name.removeprefix("__SCK__")
            if sec.name == ".static_call_sites" and tramp in self.exported:
                self.substitutes[name] = tramp
                kept.append(i)
            elif self.objname == "vmlinux":
                # Since Linux 5.8 the module loader applies klp relocations against
                # vmlinux itself (apply_relocations), before jump labels and static
                # calls are set up, so a vmlinux key can be a klp symbol.
                kept.append(i)
            elif sec.name == ".static_call_sites":
                # Without the entry the site keeps calling the trampoline, which
                # static_call_update() retargets: the same call, one jump longer.
                continue
            else:
                raise StaticKeyError(
                    f"the patched code uses the static key {name}, which the module loader "
                    "cannot resolve when it loads the patch (it belongs to the patched "
                    "module, or vmlinux does not export it)",
                    hint="read the key instead: static_key_enabled() in place of the static branch",
                )
        return kept


def _entry_size(obj: ObjectFile, sec: Section, table: EntryTable) -> int:
    """The entry size of a table in this object: fixed, or read from where its entries start.

    ``struct bug_entry`` grew from 12 to 16 bytes in 7.x (a format string
    after the address), ``struct alt_instr`` from 12 to 14 after 6.1 (a 32-bit
    ``ft_flags`` in place of the 16-bit cpuid): each
    entry has one reference to code, at its start; an alternative's second
    one is to its replacement, in ``.altinstr_replacement``, not counted.
    """
    if not table.sized_by_code:
        return table.entry_size
    starts = sorted(
        r.offset
        for r in sec.relas
        if (home := obj.symbol_section(obj.symbols[r.sym]))
        and home.is_text
        and not home.name.startswith(WHOLE)
    )
    if len(starts) > 1:
        step = starts[1] - starts[0]
        if (
            step > 0
            and len(sec.data) == step * len(starts)
            and all(s == starts[0] + i * step for i, s in enumerate(starts))
        ):
            return step
    if len(starts) == 1 and starts[0] == 0:
        return len(sec.data)
    return table.entry_size


def extract(
    obj: ObjectFile,
    functions: dict[str, str],
    *,
    renames: dict[str, str],
    exported: set[str],
    new_data: set[str] | None = None,
    objname: str = "vmlinux",
    tag: str = "",
    redirects: dict[str, str] | None = None,
    shared_data: set[str] | None = None,
    objtool_at_link: bool = False,
    kernel_strings: StringLookup | None = None,
) -> PatchObject:
    """Build the patch object from ``obj``.

    Args:
        obj: the patched object.
        functions: its changed and new functions -> their names in the kernel.
        renames: patched-object names -> the original object's names (clones).
        exported: symbols the target kernel exports (Module.symvers).
        new_data: objects the fix adds (new statics and globals), carried in the patch.
        objname: ``vmlinux`` or the module the object is linked into.
        tag: set when several patch objects go into one module: it prefixes
            the object's global names (new code, klp references) to keep them apart.
        redirects: kernel functions whose calls go to a global of the module instead
            (the carried copy another file's patch object holds), kernel objects
            whose uses go to a copy another file's patch object holds, and new code
            of another file of the fix this one uses (its module-wide name).
        shared_data: objects other patch objects of the module use, by kernel name:
            carried copies and new global data. They are carried, and given a
            module-wide name (``new_symbol_name``), as new code is.
        objtool_at_link: objtool runs on the linked module (the build's
            ``Target.objtool_at_link``): the tables it writes are left out.
        kernel_strings: for vmlinux, where the image already holds a string
            (``image_refs.KernelStrings.find``): uses of it refer there.
    """
    ex = _Extractor(
        obj,
        functions,
        renames=renames,
        exported=exported,
        new_data=new_data or set(),
        objname=objname,
        tag=tag,
        redirects=redirects or {},
        shared_data=shared_data or set(),
        objtool_at_link=objtool_at_link,
        kernel_strings=kernel_strings,
    )
    ex.run()
    data = ex.build()
    return PatchObject(
        data=data,
        functions={k: new_symbol_name(k, tag) for k in functions.values()},
        klp_symbols=ex.klp,
        exported=ex.used_exports,
    )
