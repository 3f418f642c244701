"""Changed read-only data: carried as a new copy, and the functions that use it patched.

A live patch cannot change data the running kernel already uses in place:
other code may hold it, and nothing switches readers over at a safe point.
Read-only data (a ``const`` table, a ``const`` ops struct, a string array)
needs no switching: the patch carries a *new copy* of it (as it carries new
data), and every function that refers to the old one is patched, so that
its new copy uses the new data. The livepatch core switches each task from
the old functions to the new ones, so a task sees the old data or the new
data consistently with the code it runs.

Who refers to the object is read as for callers of carried code (callers.py):
the object's own file (its relocations), and for a global object of vmlinux,
the image scan (image_refs.py), whose functions in other files are compiled
and checked against the image (outside.py). A function without an ftrace
entry is carried, and its callers patched, as a caller of carried code is.

Some users keep the old copy; they are listed as a partial fix, as ADR 6
does, or refused with ``--complete``; a changed object none of whose users
the patch can redirect is refused:

- a pointer to it stored in other data: when that data is read-only too, it
  is copied in turn (its copy points to the new copy), up to ``MAX_COPIES``
  objects; writable data keeps pointing to the old copy;
- ``__init`` code: it ran at boot and may have stored the address;
- an export: modules read the old copy;
- a global object of a module: its other files are not searched.

Refused whatever is asked: writable data (the running kernel may have
changed it since boot, and code may hold it), ``__ro_after_init`` data (the
kernel wrote it at boot; a copy compiled from the source would lose that),
per-CPU and boot-time data. The original's bytes are compared with the
vmlinux image, relocated fields aside, so data the build changed at boot in
some other way is refused too.

A copy lives in the patch module. When a patched function hands out its
address (``&table`` passed on, not just read through), or the copy holds
pointers to code or data of the patch that readers may keep, the module
must outlive every holder of such a pointer: it pins itself (ADR 14).
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from suture.builder import callers, outside, same_names, sections, slots
from suture.builder.callers import Reference, RefKind
from suture.builder.compile import ObjectPair
from suture.builder.data_objects import SHADOW_HINT, DataObject, data_objects
from suture.builder.differ import DiffResult, FunctionChange
from suture.builder.elfobj import (
    ObjectFile,
    Rela,
    RelocType,
    Section,
    SymBind,
    Symbol,
    SymType,
    target_offset,
)
from suture.builder.target import Target
from suture.builder.units import Unit, kernel_address, progress
from suture.errors import BuildError

MAX_COPIES = 16  # read-only objects copied for one file, beyond which the fix is refused
_SHOWN = 12  # users named in a refusal
_INIT_TEXT = (".init.text", ".exit.text", ".head.text", ".meminit.text", ".ref.text")


@dataclass
class CopyPlan:
    """What carrying new copies of one file's changed read-only data patches."""

    roots: list[str] = field(default_factory=list)  # changed objects (original names)
    copied: list[str] = field(default_factory=list)  # roots and read-only objects pointing to them
    users: dict[str, str] = field(default_factory=dict)  # function -> copied object it uses
    # Functions of other files of vmlinux that use a copied global object (for outside.py).
    outside: list[tuple[Reference, str]] = field(default_factory=list)
    unpatched: list[str] = field(default_factory=list)  # users that keep the old copy, and why
    pins: list[str] = field(default_factory=list)  # why the module must stay loaded for good


def _named(obj: ObjectFile, rela: Rela) -> Symbol | None:
    """The function or object a relocation points at, through a section symbol too."""
    sym = obj.symbols[rela.sym]
    if sym.type != SymType.SECTION:
        return sym
    sec = obj.symbol_section(sym)
    if sec is None:
        return None
    return sec.symbol if sec.symbol is not None else obj.symbol_at(sec, target_offset(rela))


class _Planner:
    def __init__(self, unit: Unit, target: Target) -> None:
        self.unit = unit
        self.target = target
        self.obj = unit.orig
        self.objects = data_objects(unit.orig)
        self.functions = unit.orig.functions()
        self.changed = {c.name for c in unit.diff.changed}
        self.plan = CopyPlan()
        self.refs = self._references()
        self.positions = same_names.in_target(unit.running or unit.orig, unit.objname, target)

    def _references(self) -> dict[str, list[tuple[Section, Rela]]]:
        """Object name -> the relocations that point at it, and the section of each."""
        refs: dict[str, list[tuple[Section, Rela]]] = {}
        for sec in self.obj.sections:
            if sections.describes_code(sec.name):
                continue
            for rela in sec.relas:
                named = _named(self.obj, rela)
                if named is not None and named.name in self.objects:
                    refs.setdefault(named.name, []).append((sec, rela))
        return refs

    def copy(self, name: str, why: str) -> None:
        """Carry a new copy of ``name`` and find who uses the old one."""
        if name in self.plan.copied:
            return
        self.plan.copied.append(name)
        if len(self.plan.copied) > MAX_COPIES:
            raise BuildError(
                f"{self.unit.pair.source}: more than {MAX_COPIES} read-only objects would "
                f"have to be copied for {self.plan.roots[0]}",
                hint="change fewer tables, or patch the functions that use them by hand",
            )
        data = self.objects[name]
        if data.section.symbol is not data.symbol:
            raise BuildError(
                f"{self.unit.pair.source}: {name} is read-only data the patch would carry as a "
                f"new copy ({why}), but it shares its section {data.section.name} with other "
                "data, which a copy would duplicate too",
                hint="give it a section of its own (drop its section attribute), or patch the "
                "functions that use it by hand",
            )
        self._check_image(data)
        for sec, rela in self.refs.get(name, []):
            self._user(name, sec, rela, why)
        if self.unit.objname == "vmlinux" and self.objects[name].symbol.bind != SymBind.LOCAL:
            self._elsewhere(name)
        elif self.objects[name].symbol.bind != SymBind.LOCAL:
            self._leave(name, f"it is global and its users in other files of "
                              f"{self.unit.objname} are not searched")  # fmt: skip

    def _user(self, name: str, sec: Section, rela: Rela, why: str) -> None:
        """One relocation that refers to ``name``: a user patched, a copy more, or a note."""
        if sections.is_export_table(sec.name):
            self._leave(name, "it is exported, so modules keep reading the old copy")
            return
        owner = sec.symbol or self.obj.symbol_at(sec, rela.offset)
        if sec.is_text:
            func = owner.name.removesuffix(".cold") if owner else ""
            if sec.name.startswith(_INIT_TEXT):
                self._leave(name, f"{func or sec.name} (boot code) used the old copy, and what "
                                  "it did with it stays")  # fmt: skip
            elif func not in self.functions:
                self._leave(name, f"{func or 'code'} in {sec.name} is not in a section of its own")
            elif func not in self.changed and func not in self.plan.users:
                self.plan.users[func] = name
            return
        if owner is None or owner.name == name:
            if owner is None:
                self._leave(name, f"unnamed data in {sec.name} points to it")
            return
        home = slots.section_home(sec.name, sec.flags)
        if home is slots.Home.READ_ONLY and owner.name in self.objects:
            self.copy(owner.name, f"it points to {name}")
        elif home is not slots.Home.BOOT_CALLS:
            self._leave(name, f"a pointer to it is stored in {owner.name} ({home.value}), "
                              "which keeps pointing to the old copy")  # fmt: skip

    def _elsewhere(self, name: str) -> None:
        """Users of a global vmlinux object in other files, from the image scan."""
        index, ksyms = self.target.image_index, self.target.kallsyms
        address = kernel_address(ksyms, self.positions, name)
        if address is None:
            self._leave(name, "its address in the kernel is not known, so its users in "
                              "other files are not")  # fmt: skip
            return
        names = [*self.functions, *self.objects]
        found = {n: kernel_address(ksyms, self.positions, n) for n in names}
        own = {a for n in self.functions if (a := found[n]) is not None}
        mine = {a for n in self.objects if (a := found[n]) is not None}
        for ref in index.references(address, own):
            if ref.kind is RefKind.EXPORT:
                self._leave(name, "it is exported, so modules keep reading the old copy")
            elif ref.slot is not None:
                if ref.address not in mine:
                    self._leave(name, f"a pointer to it is stored in {ref.where} in another "
                                      f"file ({ref.slot.home.value}), which keeps pointing to "
                                      "the old copy")  # fmt: skip
            elif ref.where.endswith(")") or ref.kind is RefKind.INIT:
                self._leave(name, f"{ref.where} uses it from boot or patched-in code")
            elif (ref, name) not in self.plan.outside:
                self.plan.outside.append((ref, name))

    def _check_image(self, data: DataObject) -> None:
        """The running vmlinux holds what the original compiles to (relocated fields aside)."""
        if self.unit.objname != "vmlinux":
            return
        address = kernel_address(self.target.kallsyms, self.positions, data.name)
        raw, relas = data.code()
        image = self.target.image_index.bytes_at(address, len(raw)) if address else None
        if image is None or _masked(raw, relas) != _masked(image, relas):
            raise BuildError(
                f"{self.unit.pair.source}: the patch would carry a new copy of {data.name}, "
                "but the running kernel's is not what its source compiles to (the kernel "
                "changed it at boot, or built it otherwise): a copy cannot stand in for it",
                hint=SHADOW_HINT,
            )

    def _leave(self, name: str, why: str) -> None:
        note = f"{name}: {why}"
        if note not in self.plan.unpatched:
            self.plan.unpatched.append(note)


def _masked(data: bytes, relas: list[Rela]) -> bytes:
    out = bytearray(data)
    for r in relas:
        width = 8 if r.type in (RelocType.R_64, RelocType.PC64) else 4
        out[r.offset : r.offset + width] = bytes(width)
    return bytes(out)


@dataclass
class Copies:
    """What carrying new copies of changed read-only data adds to a build."""

    plans: list[CopyPlan]  # one per unit of the fix
    users: list[Unit]  # units of the users in other files of vmlinux
    unpatched: list[str]  # users that keep the old copy, and why


def plan(
    units: list[Unit], *, target: Target, work: Path, complete: bool
) -> tuple[list[Unit], Copies]:
    """Plan the copies of every unit of the fix; the units, their diffs now patching the users.

    Raises:
        BuildError: a copy no patched function would use; with ``complete``, any user
            left with the old copy.
    """
    plans = [plan_copies(u, target=target) for u in units]
    units = [with_copies(u, p) for u, p in zip(units, plans, strict=True)]
    fix_files = {u.pair.source for u in units}
    users, notes = outside_users(fix_files, target=target, plans=plans, work=work)
    refuse_uncovered(units, plans, users, notes, complete=complete)
    unpatched = [n for p in plans for n in p.unpatched] + notes
    for note in unpatched:
        progress(f"warning: left using the old copy: {note}")
    return units, Copies(plans, users, unpatched)


def plan_copies(unit: Unit, *, target: Target) -> CopyPlan:
    """Which objects to copy and which functions to patch for a unit's changed read-only data."""
    if not unit.diff.changed_data:
        return CopyPlan()
    planner = _Planner(unit, target)
    planner.plan.roots = list(unit.diff.changed_data)
    for name in planner.plan.roots:
        planner.copy(name, "the fix changes it")
    plan = planner.plan
    plan.pins = _pins(unit, plan)
    users = ", ".join(sorted(plan.users)) or "no function of its own file"
    progress(
        f"{unit.pair.source}: carrying new copies of {', '.join(plan.copied)} (read-only data); "
        f"patching {users}"
        + (f", and looking for {len(plan.outside)} users in other files" if plan.outside else "")
    )
    return plan


def with_copies(unit: Unit, plan: CopyPlan) -> Unit:
    """The unit whose diff also patches the users of the copies, and carries the copies."""
    if not plan.copied:
        return unit
    orig_funcs, patched_funcs = unit.orig.functions(), unit.patched.functions()
    inverse = {o: p for p, o in unit.diff.renames.items()}
    changes = []
    for func, data in plan.users.items():
        if inverse.get(func, func) not in patched_funcs:
            plan.unpatched.append(f"{data}: {func} is gone from the patched file")
            continue
        sec = orig_funcs[func]
        changes.append(
            FunctionChange(
                func, "caller", sec.name, sec.code_size, callers.has_fentry(unit.orig, sec),
                reason=f"uses {data}, which the patch carries as a new copy",
            )
        )  # fmt: skip
    diff = dataclasses.replace(
        unit.diff,
        changed=[*unit.diff.changed, *changes],
        new_data=[*unit.diff.new_data, *(inverse.get(n, n) for n in plan.copied)],
        changed_data=[],
    )
    return dataclasses.replace(unit, diff=diff)


def outside_users(
    fix_files: set[str], *, target: Target, plans: list[CopyPlan], work: Path
) -> tuple[list[Unit], list[str]]:
    """Units for the users of copied global objects in other files of vmlinux; notes of the rest.

    Each such function is found in the source, compiled as it is, checked
    against the image, and patched so that it uses the copy (its unit
    names the unit that carries it, as callers of carried code do).
    """
    wanted = [(ref, data, i) for i, p in enumerate(plans) for ref, data in p.outside]
    if not wanted:
        return [], []
    progress(f"compiling the files of {len({r.where for r, _, _ in wanted})} users of copied "
             "data in other files")  # fmt: skip
    found = outside.resolve(
        target.tree, target.image_index, [(r, d) for r, d, _ in wanted], work / "data-users",
        fix_files=fix_files, accept=_uses,
    )  # fmt: skip
    carrier = {data: i for _, data, i in wanted}
    extra = []
    for cf in found.files:
        sections_ = cf.obj.functions()
        changes = [
            FunctionChange(
                name, "caller", sections_[name].name, len(sections_[name].data), has_fentry=True,
                reason=f"uses {data}, which the patch carries as a new copy",
            )
            for name, data in cf.callers.items()
        ]  # fmt: skip
        pair = ObjectPair(cf.source, cf.obj.path, cf.obj.path)
        # Every copied object the functions use, not only the one they were found for.
        used = {
            n.name
            for name in cf.callers
            for r in sections_[name].relas
            if (n := _named(cf.obj, r)) is not None and n.name in carrier
        }
        carriers = {data: carrier[data] for data in used}
        unit = Unit(pair, cf.obj, cf.obj, DiffResult(changed=changes), "vmlinux", carriers)
        plans[carrier[next(iter(cf.callers.values()))]].pins += _address_uses(
            cf.obj, {name: name for name in cf.callers}, set(carriers)
        )
        extra.append(unit)
    return extra, found.unpatched


def refuse_uncovered(
    units: list[Unit],
    plans: list[CopyPlan],
    extra: list[Unit],
    outside_notes: list[str],
    *,
    complete: bool,
) -> None:
    """Refuse a changed object none of whose users is patched; any user left with ``complete``."""
    elsewhere = {data for u in extra for data in u.carriers if u.diff.changed}
    if complete and outside_notes:
        raise BuildError(
            f"some users keep the old copy: {'; '.join(outside_notes)}",
            hint="build without --complete to patch the users that can be patched",
        )
    for unit, copy_plan in zip(units, plans, strict=True):
        if complete and copy_plan.unpatched:
            raise BuildError(
                f"{unit.pair.source}: some users keep the old copy: "
                f"{'; '.join(copy_plan.unpatched)}",
                hint="build without --complete to patch the users that can be patched",
            )
        used = set(copy_plan.users.values()) | (elsewhere & set(copy_plan.copied))
        for root in copy_plan.roots:
            if used & set(copy_plan.copied):
                continue
            notes = "; ".join([*copy_plan.unpatched, *outside_notes][:_SHOWN]) or "nothing uses it"
            raise BuildError(
                f"{unit.pair.source}: the fix changes {root}, read-only data a live patch "
                f"carries as a new copy, but no user of it can be patched to use the copy: "
                f"{notes}",
                hint="make the fix in the functions that use the data, or set the new "
                "values up in a pre-patch callback",
            )


def _uses(obj: ObjectFile, sec: Section, data: str) -> str:
    """Empty when a compiled function outside can be patched to use the copy of ``data``."""
    if not callers.has_fentry(obj, sec):
        return "has no ftrace entry"
    for rela in sec.relas:
        named = _named(obj, rela)
        if named is not None and named.name == data:
            return ""
    return f"does not use {data}"


def _pins(unit: Unit, plan: CopyPlan) -> list[str]:
    """Why the module must stay once loaded: its copies' addresses or contents handed out."""
    inverse = {o: p for p, o in unit.diff.renames.items()}
    patched = unit.patched
    copies = {inverse.get(n, n) for n in plan.copied}
    # Every function whose new code the patch holds: the users, and what the fix changes.
    funcs = {inverse.get(f, f): f for f in plan.users}
    funcs.update({inverse.get(c.name, c.name): c.name for c in unit.diff.changed})
    funcs.update({n.name: n.name for n in unit.diff.new})
    reasons = _address_uses(patched, funcs, copies)
    carried = set(funcs)
    objects = data_objects(patched)
    for name in sorted(copies):
        if name not in objects:
            continue
        _, relas = objects[name].code()
        for rela in relas:
            named = _named(patched, rela)
            inside = named is not None and (
                (named.type == SymType.FUNC and named.name in carried)
                or (named.type == SymType.OBJECT and named.name in copies | set(unit.diff.new_data))
            )
            if inside and named is not None:
                reasons.append(f"the copy of {name} points to {named.name}, which the patch holds")
                break
    return reasons


_INSN = re.compile(r"^\s*([0-9a-f]+):\t([0-9a-f ]+?)\s*\t(\S+)\s*(.*)$")


def _address_uses(obj: ObjectFile, funcs: dict[str, str], copies: set[str]) -> list[str]:
    """Functions of ``obj`` (name -> kernel name) that take a copy's address, not only read it."""
    reasons = []
    sections_ = obj.functions()
    for name, kernel_name in funcs.items():
        sec = sections_.get(name)
        if sec is None:
            continue
        sites = [r for r in sec.relas if (n := _named(obj, r)) is not None and n.name in copies]
        if not sites:
            continue
        code = _instructions(obj.path, sec.name)
        for rela in sites:
            if _takes_address(code, rela.offset):
                what = _named(obj, rela)
                reasons.append(
                    f"{kernel_name} hands out the address of the copy of "
                    f"{what.name if what else '?'}"
                )
                break
    return reasons


def _instructions(path: Path, section: str) -> list[tuple[int, int, str, str]]:
    """The instructions of one section: (offset, length, mnemonic, operands), by objdump."""
    proc = subprocess.run(
        ["objdump", "-d", "-w", f"--section={section}", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    rows = []
    for line in proc.stdout.splitlines():
        m = _INSN.match(line)
        if m:
            rows.append((int(m.group(1), 16), len(m.group(2).split()), m.group(3), m.group(4)))
    return rows


def _takes_address(code: list[tuple[int, int, str, str]], offset: int) -> bool:
    """The relocated field at ``offset`` is an address used as a value, not a memory operand.

    ``lea x(%rip)`` and ``mov $x, ...`` hand the address on; ``mov x(,%rax,8)``
    and ``mov x(%rip)`` read through it. Unknown code counts as handing it on.
    """
    for start, length, mnemonic, operands in code:
        if not start <= offset < start + length:
            continue
        if mnemonic.startswith("lea") or "(" not in operands:
            return True
        # A store of an immediate to memory: the immediate is the instruction's tail.
        return "$" in operands and offset + 4 == start + length
    return True
