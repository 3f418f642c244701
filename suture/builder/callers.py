"""Patch the callers of a changed function the livepatch core cannot redirect.

The livepatch core redirects a function through its ftrace entry (the
``call __fentry__`` at its start). A file built without ftrace
(``CFLAGS_REMOVE_x.o = $(CC_FLAGS_FTRACE)``, kernel/trace/, ``notrace``)
has none. Such a changed function is *carried* instead: the patch holds its
new code as a plain function, and the functions that call it are patched,
so that their new copies call the new code. A caller without an ftrace entry
is carried in turn and its own callers looked at, a few levels up. Callers
in other files of vmlinux (found in the build's image) are handed back as
``outside``: the pipeline compiles their files and patches them too.

A pointer to it stored in data (an ops table, a notifier block) is a
*slot*: where the running kernel may write it with one aligned 8-byte
store, the patch redirects it to the carried copy at patch time and puts
it back at unpatch (slots.py, patch_runtime.py); any other stored pointer
is refused, named (read-only, ``__ro_after_init``, boot-time or per-CPU
data, a 4-byte field).

Some ways into the old code cannot pass through a patched function:

- its address is taken in code (a function pointer handed out, a static
  call key): calls through the pointer reach the old code;
- it is exported: modules may call it;
- a caller with no ftrace entry is too far up, or in another file;
- a global function of a module: its other files are not searched.

Those paths keep running the old code. They are listed in the plan
(``unpatched``) and in the bundle's manifest, and the fix is refused when
no path at all passes through a patched function, or when the author asks
for complete coverage (``complete``).

Refused whatever is asked, because they are unsafe rather than incomplete:

- a caller that the fix changes reaches a carried function by a tail jump.
  The caller's frame is gone from the stack while the carried code runs,
  so the livepatch core's stack check cannot see the task: in the old code,
  a task would be switched to the new code while still running the old
  carried function; in the new code, the module holding the carried copy
  could be freed under a task still running it once the patch is disabled.
  A caller that tail-jumps and is not changed is therefore carried like one
  without an ftrace entry, and its callers (whose frames stay) are patched;
- code the patch replaces takes the address of a carried function: the
  pointer to the copy in the module could outlive the patch.

A caller with an ftrace entry that reaches carried code only by a tail jump
(a syscall wrapper ``__x64_sys_x`` jumping to its out-of-line body
``__do_sys_x``, itself reached through the syscall table) is carried first,
as above. When that leaves ways in old, the plan is tried again with such a
caller *framed*: patched, with its copy compiled without sibling calls so
that it calls the carried code and its frame stays on the stack (the new
side is then as safe as any patched caller). On the old side a task running
the old carried code has no frame of that caller, so the core switches it
while it finishes the old code; framing is refused when that old code
reaches anything the patch replaces, and kept only when it leaves fewer
ways in old than carrying.

Calls from ``__init`` code of vmlinux are no path: that code ran at boot
and is freed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from suture.builder import sections, slots
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
from suture.errors import BuildError

MAX_DEPTH = 4  # caller levels above a changed function searched for ftrace entries
MAX_CARRIED = 24  # functions carried for one fix, beyond which the plan is refused
_SHOWN = 12  # paths named in a refusal
_OLD_REACH = "its old code reaches"

_INIT_TEXT = (".init.text", ".exit.text")
_JCC_LOW, _JCC_HIGH = 0x80, 0x8F  # 0f 80..0f 8f: conditional near jumps


class RefKind(enum.Enum):
    """How a place in the kernel reaches a function."""

    CALL = "call"  # a direct call: the caller's frame stays on the stack
    JUMP = "jump"  # a direct (tail) jump
    ADDRESS = "address"  # its address is taken: reachable through a pointer
    EXPORT = "export"  # an EXPORT_SYMBOL entry: modules may call it
    INIT = "init"  # a call from __init code that has run and been freed


@dataclass(frozen=True)
class Reference:
    """One place that reaches a function: the function or object it is in, and how."""

    where: str
    kind: RefKind
    has_fentry: bool = False  # the referring function can be redirected
    address: int = 0  # where the referring function or object starts in the image
    slot: slots.Slot | None = None  # a pointer stored in data: where, and in what memory

    def describe(self) -> str:
        """Words for a refusal message."""
        if self.kind is RefKind.EXPORT:
            return "it is exported, so modules may call the old code"
        if self.kind is RefKind.ADDRESS and self.slot is not None:
            return f"its address is stored in {self.slot.describe()}"
        if self.kind is RefKind.ADDRESS and self.where.endswith(")"):
            return f"code patched in at boot calls it ({self.where}), and stays old"
        if self.kind is RefKind.ADDRESS:
            return f"its address is taken in {self.where}, so calls through that pointer stay old"
        how = "tail-jumps to" if self.kind is RefKind.JUMP else "calls"
        return f"{self.where} {how} it"


# A function's references from outside the compiled object (other files of
# vmlinux), for global functions; None when they cannot be known.
OutsideRefs = Callable[[str], list[Reference] | None]


@dataclass
class CallerPlan:
    """What a fix with changed functions lacking an ftrace entry patches instead."""

    carried: list[str] = field(default_factory=list)  # new code in the patch, not redirected
    patched: list[str] = field(default_factory=list)  # callers redirected (klp_func), unchanged
    paths: dict[str, str] = field(default_factory=dict)  # caller -> the function it leads to
    # Callers in other files of vmlinux (they call it, their frames stay), and
    # the carried function each calls: for the pipeline to compile and patch.
    outside: list[tuple[Reference, str]] = field(default_factory=list)
    unpatched: list[str] = field(default_factory=list)  # paths that keep the old code, and why
    # Callers with an ftrace entry that tail-jump to carried code, patched with
    # copies compiled without sibling calls (so their frame stays): see plan_callers.
    framed: list[str] = field(default_factory=list)
    fixed_reach: bool = False  # a changed function with an ftrace entry calls carried code
    # Pointers stored in data, redirected to the carried copy at patch time:
    # (slot, carried function it points to).
    slots: list[tuple[slots.Slot, str]] = field(default_factory=list)

    @property
    def reached(self) -> bool:
        """Some way into the carried code passes through a patched function or slot."""
        return bool(self.patched or self.framed or self.fixed_reach or self.slots)


def has_fentry(obj: ObjectFile, sec: Section) -> bool:
    """The function in ``sec`` starts with a ``call __fentry__`` (after an endbr64)."""
    from suture.builder.differ import FENTRY_REACH  # noqa: PLC0415 - differ imports callers

    start = sec.start
    return any(
        start <= r.offset <= start + FENTRY_REACH and obj.symbols[r.sym].name == "__fentry__"
        for r in sec.relas
    )


def _named(obj: ObjectFile, rela: Rela) -> Symbol | None:
    """The function or object a relocation points at, through a section symbol too."""
    sym = obj.symbols[rela.sym]
    if sym.type != SymType.SECTION:
        return sym
    sec = obj.symbol_section(sym)
    if sec is None:
        return None
    if sec.symbol is not None:
        return sec.symbol
    return obj.symbol_at(sec, target_offset(rela))


def branch_kind(sec: Section, rela: Rela) -> RefKind:
    """CALL or JUMP when the relocated field is a near call's or jump's displacement."""
    if rela.type not in (RelocType.PC32, RelocType.PLT32) or rela.offset < 1:
        return RefKind.ADDRESS
    op = sec.data[rela.offset - 1]
    if op == 0xE8:
        return RefKind.CALL
    if op == 0xE9 or (
        rela.offset >= 2 and sec.data[rela.offset - 2] == 0x0F and _JCC_LOW <= op <= _JCC_HIGH
    ):
        return RefKind.JUMP
    return RefKind.ADDRESS


class _Graph:
    """Who refers to each function of one object, read from its relocations."""

    def __init__(self, obj: ObjectFile, *, vmlinux: bool) -> None:
        self.obj = obj
        self.vmlinux = vmlinux
        self.functions = obj.functions()
        self.defined = {s.name for s in obj.symbols if s.type == SymType.FUNC and s.shndx}
        self.refs: dict[str, list[Reference]] = {}
        for sec in obj.sections:
            for rela in sec.relas:
                target = _named(obj, rela)
                if target is None or target.type != SymType.FUNC:
                    continue
                ref = self._reference(sec, rela, target)
                if ref is not None and ref.where != target.name:
                    self.refs.setdefault(target.name, []).append(ref)

    def _reference(self, sec: Section, rela: Rela, target: Symbol) -> Reference | None:
        if sections.is_export_table(sec.name):
            return Reference(sec.name, RefKind.EXPORT)
        if sections.describes_code(sec.name):
            return None
        owner = sec.symbol or self.obj.symbol_at(sec, rela.offset)
        if not sec.is_text:
            # Data pointing into the middle of a function is a table of its own
            # labels (a switch, a computed goto): only that function jumps there.
            if _offset_in(self.obj, rela, target) != 0:
                return None
            slot = slots.object_slot(self.obj, sec, rela, owner)
            return Reference(owner.name if owner else sec.name, RefKind.ADDRESS, slot=slot)
        where = owner.name.removesuffix(".cold") if owner else sec.name
        kind = branch_kind(sec, rela)
        if kind is not RefKind.ADDRESS and sec.name.startswith(_INIT_TEXT) and self.vmlinux:
            return Reference(where, RefKind.INIT)
        home = self.functions.get(where)
        fentry = home is not None and has_fentry(self.obj, home)
        return Reference(where, kind, has_fentry=fentry)

    def is_global(self, name: str) -> bool:
        sec = self.functions.get(name)
        return sec is not None and sec.symbol is not None and sec.symbol.bind != SymBind.LOCAL


def _offset_in(obj: ObjectFile, rela: Rela, target: Symbol) -> int:
    """Where in ``target`` a relocation of data points.

    In data a PC-relative field (a PREL32 table entry, ``.long f - .``) counts
    from where it is stored, so its addend alone is the offset, as for an
    absolute pointer; there is no instruction end to add.
    """
    sym = obj.symbols[rela.sym]
    base = 0 if sym.type == SymType.SECTION else sym.value
    return base + rela.addend - target.value


class _Planner:
    def __init__(
        self,
        orig: _Graph,
        patched: _Graph,
        outside: OutsideRefs,
        renames: dict[str, str],
        *,
        complete: bool,
        frame_jumps: bool = False,
    ) -> None:
        self.frame_jumps = frame_jumps
        self.orig = orig
        self.patched = patched
        self.outside = outside
        self.to_patched = {o: p for p, o in renames.items()}
        self.complete = complete
        self.plan = CallerPlan()
        self.pointers: list[tuple[list[str], Reference]] = []  # address taken in this object
        self.bad_slots: list[tuple[list[str], slots.Slot]] = []  # stored where none can redirect

    def carry(self, name: str, path: list[str], fixed: set[str]) -> None:
        """Carry ``name`` and make sure each of its callers is patched or carried."""
        if name in self.plan.carried:
            return
        self.plan.carried.append(name)
        if len(self.plan.carried) > MAX_CARRIED:
            self.refuse(path, f"more than {MAX_CARRIED} functions would have to be carried")
        refs = list(self.orig.refs.get(name, []))
        if self.orig.is_global(name):
            outside = self.outside(name)
            if outside is None:
                self.leave(path, "it is global and its callers in other files are not known")
            refs += outside or []
        for ref in refs:
            self.follow(ref, name, path, fixed)

    def follow(self, ref: Reference, name: str, path: list[str], fixed: set[str]) -> None:
        """Make the path through ``ref`` into ``name`` pass through a patched function."""
        caller = ref.where
        if ref.slot is not None:
            self.redirect(ref.slot, name, path)
        elif ref.kind in (RefKind.EXPORT, RefKind.ADDRESS):
            if ref.kind is RefKind.ADDRESS and caller in self.orig.functions:
                self.pointers.append((path, ref))  # checked once the plan is whole
            self.leave(path, ref.describe())
        elif ref.kind is RefKind.INIT or caller in self.plan.carried:
            pass
        elif caller not in self.orig.defined:  # another file's function (from ``outside``)
            self.elsewhere(ref, name, path)
        else:
            self.reach(ref, name, path, fixed)

    def redirect(self, slot: slots.Slot, name: str, path: list[str]) -> None:
        """A pointer to ``name`` stored in data: redirected at patch time, or refused."""
        if slot.boot_call:
            return  # called once at boot, as from __init code
        if slot.why_not():
            self.bad_slots.append((path, slot))
        elif (slot, name) not in self.plan.slots:
            self.plan.slots.append((slot, name))

    def check_slots(self) -> None:
        """Refuse the stored pointers that cannot be redirected, all of them named."""
        if self.bad_slots:
            slots.refuse_slots(self.bad_slots[0][0], [s for _, s in self.bad_slots])

    def reach(self, ref: Reference, name: str, path: list[str], fixed: set[str]) -> None:
        """A caller in this object: patched if it can be, carried in turn if not."""
        caller = ref.where
        jumps = ref.kind is RefKind.JUMP or self._tail_jumps(caller, name)
        if caller in fixed:
            if jumps:
                self.refuse([*path, caller], f"the changed {caller} tail-jumps to it")
            self.plan.fixed_reach = True
            return
        if caller in self.plan.patched:
            if not jumps:
                return
            self.plan.patched.remove(caller)  # carried instead: see the module's docstring
        if caller not in self.orig.functions:
            self.refuse([*path, caller], f"{caller} is not in a section of its own")
        if self.to_patched.get(caller, caller) not in self.patched.functions:
            self.refuse([*path, caller], f"{caller} is gone from the patched object")
        self.plan.paths[caller] = name
        if ref.has_fentry and not jumps:
            self.plan.patched.append(caller)
            return
        if ref.has_fentry and self.frame_jumps:
            if caller not in self.plan.framed:
                self.plan.framed.append(caller)
            return
        if len(path) >= MAX_DEPTH:
            why = "tail-jumps to it" if jumps else "has no ftrace entry either"
            self.leave(
                [*path, caller], f"{caller} {why}, and no caller with an ftrace entry is "
                f"found within {MAX_DEPTH} levels",
            )  # fmt: skip
            return
        self.carry(caller, [*path, caller], fixed)

    def check_old_reach(self, fixed: set[str]) -> None:
        """Refuse framing when the old code a framed caller jumps to reaches replaced code.

        A task running that old code has no frame of the caller on its stack
        (the jump removed it), so the livepatch core switches it while it runs
        the old code: the old code must then call nothing the patch replaces.
        """
        replaced = fixed | set(self.plan.patched) | set(self.plan.framed)
        calls: dict[str, set[str]] = {}
        for target, refs in self.orig.refs.items():
            for r in refs:
                if r.kind in (RefKind.CALL, RefKind.JUMP):
                    calls.setdefault(r.where, set()).add(target)
        for caller in self.plan.framed:
            start = self.plan.paths[caller]
            seen, todo = {start}, [start]
            while todo:
                for callee in calls.get(todo.pop(), ()):
                    if callee in replaced:
                        self.refuse(
                            [start, caller], f"{caller} tail-jumps to it, and {_OLD_REACH} "
                            f"{callee}, which the patch replaces: a task switched while it "
                            "runs that old code would mix old and new code",
                        )  # fmt: skip
                    if callee not in seen:
                        seen.add(callee)
                        todo.append(callee)

    def elsewhere(self, ref: Reference, name: str, path: list[str]) -> None:
        """A caller in another file: for the pipeline to patch, unless it tail-jumps."""
        if ref.kind is RefKind.JUMP:
            self.leave(path, f"{ref.describe()} from another file")
        elif all(r.where != ref.where or r.address != ref.address for r, _ in self.plan.outside):
            self.plan.outside.append((ref, name))

    def check_pointers(self, fixed: set[str]) -> None:
        """Refuse a pointer to a carried function that code in the patch would hand out."""
        replaced = fixed | set(self.plan.carried) | set(self.plan.patched) | set(self.plan.framed)
        for path, ref in self.pointers:
            if ref.where in replaced:
                self.refuse(
                    path, f"its address is taken in {ref.where}, which the patch replaces: "
                    "a pointer to the copy in the patch could outlive the patch",
                )  # fmt: skip

    def leave(self, path: list[str], why: str) -> None:
        """A path that keeps reaching the old code: noted, or refused if coverage must be whole."""
        if self.complete:
            self.refuse(path, why)
        note = f"{' <- '.join(path)}: {why}"
        if note not in self.plan.unpatched:
            self.plan.unpatched.append(note)

    def _tail_jumps(self, caller: str, name: str) -> bool:
        """The patched copy of ``caller`` reaches ``name`` by a jump."""
        pc, pn = self.to_patched.get(caller, caller), self.to_patched.get(name, name)
        return any(r.where == pc and r.kind is RefKind.JUMP for r in self.patched.refs.get(pn, []))

    @staticmethod
    def refuse(path: list[str], why: str) -> None:
        chain = " <- ".join(path)
        raise BuildError(
            f"{path[0]} changed but has no ftrace entry (its file is built without ftrace "
            f"or it is notrace); patching its callers instead was tried along {chain}: {why}",
            hint="move the fix into a caller that has an ftrace entry, or patch it by hand",
        )


def plan_callers(
    orig: ObjectFile,
    patched: ObjectFile,
    no_fentry: list[str],
    *,
    fixed: set[str],
    vmlinux: bool,
    outside: OutsideRefs,
    renames: dict[str, str] | None = None,
    complete: bool = False,
) -> CallerPlan:
    """Which functions to carry and which callers to patch for changed ``no_fentry`` functions.

    Args:
        orig: the object as the running kernel has it (its calls are the paths to cover).
        patched: the object after the fix (the copies the patch carries).
        no_fentry: changed functions (original names) without an ftrace entry.
        fixed: functions the patch already redirects (changed ones with an ftrace entry).
        vmlinux: the object is part of vmlinux (its ``__init`` code is freed).
        outside: references to a global function from other files, or None if unknown.
        renames: patched-object names -> original names (clones GCC renumbered).
        complete: refuse when any path keeps reaching the old code.

    Raises:
        BuildError: no path to a carried function can be patched, a path cannot be
            patched safely, or (``complete``) some path cannot be patched.
    """
    graphs = (_Graph(orig, vmlinux=vmlinux), _Graph(patched, vmlinux=vmlinux))

    def attempt(frame_jumps: bool) -> CallerPlan:
        planner = _Planner(
            *graphs, outside, renames or {}, complete=complete, frame_jumps=frame_jumps
        )
        for name in no_fentry:
            planner.carry(name, [name], fixed)
        planner.check_slots()
        planner.check_pointers(fixed)
        planner.check_old_reach(fixed)
        plan = planner.plan
        if not plan.reached and not plan.outside:
            refuse_uncovered(no_fentry, plan.unpatched)
        return plan

    # Carrying a tail-jumping caller keeps every task consistent; framing it
    # (its copy calls instead of jumping) is only tried when carrying leaves
    # ways in old or pointers to redirect, and kept when it leaves fewer
    # (a redirected pointer keeps the module loaded for good: ADR 14).
    try:
        plan = attempt(frame_jumps=False)
    except BuildError as first:
        try:
            return attempt(frame_jumps=True)
        except BuildError as second:
            if _OLD_REACH in second.message:  # say why framing did not help either
                raise BuildError(f"{first.message}; {second.message}", hint=first.hint) from None
            raise first from None
    if plan.unpatched or plan.slots:
        try:
            framed = attempt(frame_jumps=True)
        except BuildError:
            return plan
        cost = (len(framed.unpatched), len(framed.slots))
        if framed.framed and cost < (len(plan.unpatched), len(plan.slots)):
            return framed
    return plan


def refuse_uncovered(no_fentry: list[str], unpatched: list[str]) -> None:
    """Refuse a fix none of whose paths passes through a patched function."""
    why = "no caller with an ftrace entry reaches it (only boot code, or nothing)"
    if unpatched:
        shown = "; ".join(unpatched[:_SHOWN])
        more = f"; and {len(unpatched) - _SHOWN} more" if len(unpatched) > _SHOWN else ""
        why = f"no path to it passes through a function the patch can redirect: {shown}{more}"
    _Planner.refuse(no_fentry, why)
