"""The translation units a build patches, and how callers of carried code join them.

A unit is one file compiled before and after the fix. The files of the fix
are the first units; the builder adds others for the callers of carried code
(callers.py): the fixed file compiled again without sibling calls for callers
that tail-jump (*framed*), and other files of vmlinux that call a carried
global function (outside.py). A module's file whose changed code uses static
keys its loader cannot resolve is compiled again with key reads.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from suture.builder import callers, data_objects, headers, outside, same_names, symbols
from suture.builder.compile import KEY_READ_FLAGS, NO_SIBLING_CALL_FLAGS, ObjectPair, compile_pair
from suture.builder.differ import DiffResult, FunctionChange, diff_objects
from suture.builder.elfobj import ObjectFile
from suture.builder.fix import Fix
from suture.builder.target import Target
from suture.errors import BuildError, StaticKeyError


def progress(text: str) -> None:
    """A step of the build, logged (stderr, or the journal)."""
    logging.getLogger("suture.builder").info("%s", text)


def refuse_unpatchable(pair: ObjectPair, diff: DiffResult, orig: ObjectFile) -> None:
    """Refuse a unit whose diff changes what a live patch cannot (writable data, __init code ...).

    Changed read-only data passes: the patch carries a new copy (data_copies.py).
    """
    if diff.unpatchable:
        what, why = diff.unpatchable[0]
        raise BuildError(f"{pair.source}: {what} changed, but {why}")
    data_objects.refuse_changed_data(pair.source, orig, diff)


@dataclass(frozen=True)
class Unit:
    """One changed translation unit: compiled before and after, diffed, and where it links."""

    pair: ObjectPair
    orig: ObjectFile
    patched: ObjectFile
    diff: DiffResult
    objname: str  # vmlinux or the module the unit is linked into
    # A file the fix does not change, patched because its functions call carried
    # code: carried kernel function -> index of the unit that carries it.
    carriers: dict[str, int] = field(default_factory=dict)
    # The object as the running kernel has it, when ``orig`` was compiled otherwise
    # (static branches as key reads): the manifest's hashes of the old code.
    running: ObjectFile | None = None


def reached_by_headers(fix_path: Path, fix: Fix, target: Target, work: Path) -> list[str]:
    """The units of the build whose code the fix's header changes can alter (none: no header).

    Raises:
        BuildError: a header change, or a C file's change to a type it defines for
            itself, alters data the kernel has (listed); or a header reaches too far.
    """
    texts = _fix_texts(target, fix_path, fix, work)
    headers.refuse_unit_layouts({src: texts[src] for src in fix.sources})
    if not fix.headers:
        return []
    changes = {h: headers.compare(h, *texts[h]) for h in fix.headers}
    for change in changes.values():
        for line in change.changed:
            progress(f"header change: {line}")
    headers.refuse(changes)
    if not any(c.names for c in changes.values()):
        return []
    progress(f"finding the units of {target.release} that use "
             f"{', '.join(sorted(n for c in changes.values() for n in c.names))}")  # fmt: skip
    found = headers.reach(target.tree.path, target.catalog, target.include_graph, changes)
    progress(
        f"{len(found.units)} of the {found.including} units including the headers use the "
        f"changed names ({len(found.names)} names, with what they define in turn)"
    )
    return found.units


def _fix_texts(target: Target, fix_path: Path, fix: Fix, work: Path) -> dict[str, tuple[str, str]]:
    """Each C file and header of the fix before and after it (applied to copies)."""
    copy = work / "headers"
    for rel in fix.files:
        src = target.tree.path / rel
        if src.exists():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, copy / rel)
    proc = subprocess.run(
        ["patch", "-p1", "-F0", "--no-backup-if-mismatch", "-s", "-f", "-d", str(copy), "-i",
         str(fix_path.absolute())],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise BuildError(
            f"the fix does not apply to the source of {target.release}:\n"
            f"{(proc.stdout + proc.stderr).strip()[-2000:]}",
            hint=f"rebase the fix on Debian's linux-source at {target.tree.version}",
        )
    texts = {}
    for rel in (*fix.headers, *fix.sources):
        old = target.tree.path / rel
        texts[rel] = (
            old.read_text(errors="replace") if old.exists() else "",
            (copy / rel).read_text(errors="replace") if (copy / rel).exists() else "",
        )
    return texts


def with_key_reads(
    fix: Path,
    target: Target,
    unit: Unit,
    work: Path,
    why: StaticKeyError,
) -> Unit:
    """The unit compiled again with its static branches as reads of their keys."""
    progress(f"{unit.pair.source}: {why.message}; compiling it again with key reads")
    try:
        pairs = compile_pair(
            target.tree, fix, work / "key-reads", flags=KEY_READ_FLAGS, sources=[unit.pair.source]
        )
    except BuildError as e:
        raise BuildError(f"{unit.pair.source}: {why.message}", hint=why.hint) from e
    pair = next(p for p in pairs if p.source == unit.pair.source)
    orig, patched = ObjectFile.load(pair.original), ObjectFile.load(pair.patched)
    lines = Fix.parse(fix.read_text(errors="replace")).line_maps(pair.source)
    diff = diff_objects(orig, patched, lines)
    refuse_unpatchable(pair, diff, orig)
    running = unit.orig.functions()
    unknown = [c.name for c in diff.changed if c.name not in running]
    if unknown:
        raise BuildError(
            f"{pair.source}: {why.message}; compiled with key reads, the changed code is in "
            f"functions the running {unit.objname} does not have ({', '.join(unknown)})",
            hint=why.hint,
        )
    return Unit(pair, orig, patched, diff, unit.objname, unit.carriers, running=unit.orig)


def plan_unit(unit: Unit, *, target: Target, complete: bool) -> callers.CallerPlan:
    """Changed functions without an ftrace entry: which to carry, which callers to patch."""
    pair, orig, patched, diff, objname = (
        unit.pair, unit.orig, unit.patched, unit.diff, unit.objname
    )  # fmt: skip
    no_fentry = [c.name for c in diff.changed if not c.has_fentry]
    if not no_fentry:
        return callers.CallerPlan()
    elsewhere_refs = _outside_refs(objname, target, unit.running or orig)
    try:
        plan = callers.plan_callers(
            orig, patched, no_fentry, fixed={c.name for c in diff.changed if c.has_fentry},
            vmlinux=objname == "vmlinux", outside=elsewhere_refs, renames=diff.renames,
            complete=complete,
        )  # fmt: skip
    except BuildError as e:
        raise BuildError(f"{pair.source}: {e.message}", hint=e.hint) from e
    elsewhere = sorted({ref.where for ref, _ in plan.outside})
    slots = ", ".join(f"{s.symbol}+{s.offset:#x}" for s, _ in plan.slots)
    progress(
        f"no ftrace entry in {', '.join(no_fentry)}: carrying {', '.join(plan.carried)}, "
        f"patching {', '.join(plan.patched + plan.framed) or 'no other function'} in the file"
        + (f", redirecting the pointers in {slots}" if slots else "")
        + (f", and looking for {', '.join(elsewhere)} in other files" if elsewhere else "")
    )
    return plan


def framed_callers(
    fix: Path,
    target: Target,
    units: list[Unit],
    plans: list[callers.CallerPlan],
    work: Path,
) -> list[Unit]:
    """Units for callers that tail-jump to carried code, compiled without sibling calls.

    Their copies must call the carried code, so that their frame stays on the
    stack while it runs (callers.py says why).
    """
    wanted = [i for i, plan in enumerate(plans) if plan.framed]
    if not wanted:
        return []
    names = sorted({f for i in wanted for f in plans[i].framed})
    progress(f"compiling {', '.join(names)} again without sibling calls (they tail-jump)")
    pairs = compile_pair(
        target.tree, fix, work / "framed", flags=NO_SIBLING_CALL_FLAGS,
        sources=[units[i].pair.source for i in wanted],
    )  # fmt: skip
    extra = []
    for i in wanted:
        unit, plan = units[i], plans[i]
        pair = next(p for p in pairs if p.source == unit.pair.source)
        obj = ObjectFile.load(pair.patched)
        sections = obj.functions()
        changes = []
        for name in plan.framed:
            callee = plan.paths[name]
            sec = sections.get(name)
            kinds = outside.call_kinds(obj, sec, callee) if sec else set()
            if sec is None or kinds != {callers.RefKind.CALL}:
                raise BuildError(
                    f"{unit.pair.source}: {name} tail-jumps to {callee}, whose new code the "
                    "patch carries, and compiled without sibling calls it still does not "
                    "just call it",
                    hint="patch it by hand",
                )
            changes.append(
                FunctionChange(
                    name,
                    "caller",
                    sec.name,
                    sec.code_size,
                    has_fentry=True,
                    reason=f"tail-jumps to {callee}, whose new code the patch carries",
                )
            )
        carriers = {plan.paths[name]: i for name in plan.framed}
        framed = ObjectPair(unit.pair.source, pair.patched, pair.patched)
        diff = DiffResult(changed=changes)
        extra.append(Unit(framed, obj, obj, diff, unit.objname, carriers, running=unit.orig))
    return extra


def outside_callers(
    fix: Path,
    *,
    complete: bool,
    target: Target,
    units: list[Unit],
    plans: list[callers.CallerPlan],
    work: Path,
) -> tuple[list[Unit], list[str]]:
    """Units for callers of carried code kept apart (framed, other files), and paths left old."""
    unpatched = [u for p in plans for u in p.unpatched]
    wanted = [(ref, fn, i) for i, p in enumerate(plans) for ref, fn in p.outside]
    extra = framed_callers(fix, target, units, plans, work)
    if wanted:
        progress(f"compiling the files of {len({r.where for r, _, _ in wanted})} callers "
                  "in other files")  # fmt: skip
        found = outside.resolve(
            target.tree, target.image_index, [(r, fn) for r, fn, _ in wanted], work / "callers",
            fix_files={u.pair.source for u in units},
        )  # fmt: skip
        unpatched += found.unpatched
        carrier = {fn: i for _, fn, i in wanted}
        for cf in found.files:
            sections = cf.obj.functions()
            changes = [
                FunctionChange(
                    name,
                    "caller",
                    sections[name].name,
                    sections[name].code_size,
                    has_fentry=True,
                    reason=f"calls {fn}, whose new code the patch carries",
                )
                for name, fn in cf.callers.items()
            ]
            pair = ObjectPair(cf.source, cf.obj.path, cf.obj.path)
            carriers = {fn: carrier[fn] for fn in set(cf.callers.values())}
            diff = DiffResult(changed=changes)
            extra.append(Unit(pair, cf.obj, cf.obj, diff, "vmlinux", carriers))
    if complete and unpatched:
        raise BuildError(
            "some paths keep reaching the old code: " + "; ".join(unpatched),
            hint="build without --complete to patch the paths that can be patched",
        )
    for i, plan in enumerate(plans):
        elsewhere = any(i in u.carriers.values() for u in extra)
        if plan.carried and not plan.reached and not elsewhere:
            try:
                callers.refuse_uncovered(plan.carried[:1], unpatched)
            except BuildError as e:
                raise BuildError(f"{units[i].pair.source}: {e.message}", hint=e.hint) from e
    for note in unpatched:
        progress(f"warning: left calling the old code: {note}")
    return extra, unpatched


def _outside_refs(objname: str, target: Target, orig: ObjectFile) -> callers.OutsideRefs:
    """References to a global function from the rest of vmlinux (read from its image)."""

    def unknown(_name: str) -> list[callers.Reference] | None:
        return None  # a module's other files are not searched

    if objname != "vmlinux":
        return unknown
    index, ksyms = target.image_index, target.kallsyms
    positions = same_names.in_target(orig, objname, target)
    own = {a for n in orig.functions() if (a := kernel_address(ksyms, positions, n)) is not None}

    def elsewhere(name: str) -> list[callers.Reference] | None:
        address = kernel_address(ksyms, positions, name)
        return None if address is None else index.references(address, own)

    return elsewhere


def kernel_address(
    ksyms: symbols.Kallsyms, positions: same_names.SameNames, name: str
) -> int | None:
    """The running kernel's address of a symbol of the patched file, or None if unsure."""
    entries = ksyms.by_name.get(name, [])
    try:
        pos = positions.sympos(name)
    except BuildError:
        return None
    return entries[max(pos, 1) - 1][0] if entries else None
