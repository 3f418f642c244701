"""``suture build``: a source fix in, a bundle for one exact kernel build out.

source (prepared once per build) -> compile the touched units twice ->
diff -> refuse what cannot be patched safely -> carry new copies of changed
read-only data and patch their users (data_copies.py) -> patch the callers
of changed functions without an ftrace entry, redirect stored pointers to
them (callers.py, slots.py; the units they add, units.py) -> extract the
changed code -> link a livepatch module with kbuild, its callbacks
generated (patch_runtime.py) -> klp relocations -> bundle.

A fix may change several files, of vmlinux and of modules. Each changed file
is planned and extracted on its own into a patch object (its locals stay its
own; its references to unexported symbols are named apart and resolved
against the object it is linked into); kbuild links them all into the one
module, which has one ``klp_object`` per patched object.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from suture import __version__, bundle, timefmt
from suture.builder import (
    callers,
    data_copies,
    klp,
    module,
    patch_runtime,
    port,
    prematch,
    same_names,
    shared,
    slots,
    symbols,
)
from suture.builder import units as units_mod
from suture.builder.compile import ObjectPair, compile_pair
from suture.builder.differ import FunctionChange, diff_objects
from suture.builder.elfobj import ObjectFile, Rela, SymType
from suture.builder.extract import PatchObject, extract
from suture.builder.extract import new_symbol_name as extract_new_name
from suture.builder.fix import Fix, require_c_files
from suture.builder.target import SymbolPositions, Target, open_target
from suture.errors import BuildError, NoChangeError, StaticKeyError


@dataclass(frozen=True)
class BuildRequest:
    """What to build."""

    release: str | None
    fix: Path
    out_dir: Path
    name: str = ""
    cves: tuple[str, ...] = ()
    description: str = ""
    level: int = 1
    complete: bool = False  # refuse a fix whose carried code stays reachable some other way
    fixes: tuple[bundle.FixRecord, ...] = ()  # the fixes a cumulative level is made of


@dataclass
class BuildReport:
    """What a build did, for ``--json`` and people."""

    release: str
    bundle: Path | None
    name: str
    objects: dict[str, list[str]] = field(default_factory=dict)  # object -> functions
    new_functions: list[str] = field(default_factory=list)
    line_only: list[str] = field(default_factory=list)
    klp_symbols: list[str] = field(default_factory=list)
    carried: list[str] = field(default_factory=list)  # new code without ftrace: callers patched
    unpatched: list[str] = field(default_factory=list)  # paths that keep reaching old code
    port: dict[str, object] | None = None  # how the fix ported to this build (port.PortResult)
    data_copies: list[str] = field(default_factory=list)  # read-only data carried as new copies
    slots: list[str] = field(default_factory=list)  # stored pointers redirected at patch time
    kept: list[str] = field(default_factory=list)  # why the module stays loaded once used

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "format": 1,
            "release": self.release,
            "bundle": str(self.bundle) if self.bundle else None,
            "name": self.name,
            "objects": self.objects,
            "new_functions": self.new_functions,
            "line_only": self.line_only,
            "klp_symbols": self.klp_symbols,
            "carried": self.carried,
            "unpatched": self.unpatched,
            "port": self.port,
            "data_copies": self.data_copies,
            "slots": self.slots,
            "kept": self.kept,
        }


def default_name(fix: Path) -> str:
    """A module name from the fix's file name: ``007-fs-x.patch`` -> ``suture_007_fs_x``."""
    stem = re.sub(r"[^a-z0-9_]", "_", fix.name.lower().removesuffix(".patch").removesuffix(".diff"))
    return ("suture_" + stem)[:55].rstrip("_")


def _objname(target: Target, pair: ObjectPair) -> str:
    """``vmlinux``, or the module a unit is linked into (read from kbuild's .cmd file)."""
    cmd = target.tree.path / Path(pair.source).parent / f".{Path(pair.source).stem}.o.cmd"
    text = cmd.read_text(errors="replace") if cmd.exists() else ""
    if "-DMODULE" not in text:
        return "vmlinux"
    match = re.search(r"-DKBUILD_MODNAME='\"(\w+)\"'", text)
    if match is None:
        raise BuildError(f"cannot tell which module {pair.source} belongs to")
    return match.group(1)


def _in_build(target: Target, objname: str, orig: ObjectFile) -> bool:
    """The compiled file is part of the build: its module ships, or vmlinux has its functions.

    kbuild compiles a file this configuration leaves out when asked for it by
    name, and without ``-DMODULE``, so it looks like vmlinux code. The running
    kernel's kallsyms has (nearly) every out-of-line function of a file that
    is built in, and none of one that is not.
    """
    if objname != "vmlinux":
        return target.ships_module(objname)
    names = [n for n in orig.functions() if "." not in n]
    if not names:
        return True  # nothing to tell by: let the diff decide
    ksyms = target.kallsyms
    return sum(1 for n in names if ksyms.count(n)) * 2 >= len(names)


def _listed(names: list[str], shown: int = 8) -> str:
    """``a, b, c`` or ``a, b, ... (and 12 more)``: progress lines stay short."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def _callbacks(obj: ObjectFile) -> dict[str, str]:
    """Callbacks the fix registers with suture_livepatch.h: kind -> function name."""
    found = {}
    for sec in obj.sections:
        kind = sec.name.removeprefix(".suture.callbacks.")
        if kind == sec.name or kind not in module.CALLBACK_KINDS:
            continue
        targets = {_function_named(obj, r) for r in sec.relas}
        if len(targets) != 1:
            raise BuildError(f"register exactly one {kind} callback (found {len(targets)})")
        found[kind] = targets.pop()
    return found


def _function_named(obj: ObjectFile, rela: Rela) -> str:
    sym = obj.symbols[rela.sym]
    sec = obj.symbol_section(sym)
    if sym.type == SymType.SECTION and sec is not None and sec.symbol is not None:
        return sec.symbol.name
    return sym.name


@dataclass
class _UnitPatch:
    """What one unit puts into the livepatch module."""

    unit: units_mod.Unit
    patch: PatchObject
    redirected: list[FunctionChange]  # klp_funcs
    klp_funcs: list[module.PatchedFunction]
    klp_syms: dict[str, klp.KlpSymbol]  # undefined symbol of the patch object -> klp symbol
    callbacks: dict[str, str]  # kind -> new code's symbol
    carried: list[str]
    slots: list[tuple[slots.Slot, str]] = field(default_factory=list)  # (slot, carried function)
    # Beside redirected/klp_funcs: each function's expected old bytes (pre-match), or None.
    expected: list[prematch.Expected | None] = field(default_factory=list)


def with_fix_about(req: BuildRequest, fix: Fix) -> BuildRequest:
    """``req`` with the fix's CVE ids and subjects where the request names none."""
    return dataclasses.replace(
        req, cves=req.cves or fix.cves, description=req.description or fix.description
    )


def build(req: BuildRequest, positions: SymbolPositions) -> BuildReport:
    """Run the whole build; ``positions`` reads where the build's symbols are (the lab).

    Raises:
        BuildError: the build failed or was refused; :class:`NoChangeError` (and
            :class:`AlreadyFixedError`, the build's source has the fix) when there is
            nothing to patch, :class:`PortConflictError` when the fix does not apply.
        SourceGoneError: the build's exact source is no longer in the archive.
    """
    # surrogateescape: bytes that are not UTF-8 reach GNU patch unchanged.
    given = Fix.parse(req.fix.read_text(errors="surrogateescape"))
    require_c_files(given)
    req = with_fix_about(req, given)
    name = req.name or default_name(req.fix)
    units_mod.progress(f"preparing the build {req.release or '(current)'} (once per build)")
    target = open_target(req.release, positions)
    image, tree = target.image, target.tree
    with tempfile.TemporaryDirectory(prefix="suture-build-") as tmp:
        work = Path(tmp)
        ported = port.port(given, tree.path, release=image.release)
        units_mod.progress(f"porting the fix to the source of {image.release}: {ported.detail}")
        exact = work / "fix.patch"  # the fix as it applies to this build, with patch -F0
        exact.write_bytes(port.applied_diff(ported).encode("utf-8", "surrogateescape"))
        if ported.outcome is port.PortOutcome.MOVED:
            units_mod.progress(f"warning: {ported.detail}")
        if not exact.stat().st_size:
            raise NoChangeError(f"the fix's commits change nothing in {image.release} together")
        fix = Fix.parse(exact.read_text(errors="surrogateescape"))
        reached = units_mod.reached_by_headers(exact, fix, target, work)
        sources = sorted(set(fix.sources) | set(reached))
        units_mod.progress(
            f"compiling {_listed(sources)} before and after the fix"
            if sources else "no unit of this build uses what the fix changes"
        )  # fmt: skip
        pairs = compile_pair(tree, exact, work / "objects", sources=sources) if sources else []
        units, absent = [], []
        for pair in pairs:
            orig, patched = ObjectFile.load(pair.original), ObjectFile.load(pair.patched)
            objname = _objname(target, pair)
            if not _in_build(target, objname, orig):
                absent.append(pair.source)
                continue
            diff = diff_objects(orig, patched, fix.line_maps(pair.source))
            units_mod.refuse_unpatchable(pair, diff, orig)
            # A unit that changes nothing is left out.
            if diff.changed or diff.new or diff.changed_data:
                units.append(units_mod.Unit(pair, orig, patched, diff, objname))
        if not units:
            same = [p.source for p in pairs if p.source not in absent]
            why = [f"{_listed(same)} compile the same"] if same else []
            if absent:
                why.append(f"its configuration does not build {_listed(absent)}")
            if not pairs:
                why.append("no unit of it uses what the fix changes")
            raise NoChangeError(f"the fix changes no code in {image.release}: {'; '.join(why)}")
        report = _generate(req, name=name, target=target, units=units, work=work, exact_fix=exact)
        report.port = ported.to_dict()
        return report


def _generate(
    req: BuildRequest,
    *,
    name: str,
    target: Target,
    units: list[units_mod.Unit],
    work: Path,
    exact_fix: Path,
) -> BuildReport:
    units, copied = data_copies.plan(units, target=target, work=work, complete=req.complete)
    plans = [units_mod.plan_unit(u, target=target, complete=req.complete) for u in units]
    callers_units, unpatched = units_mod.outside_callers(
        exact_fix, complete=req.complete, target=target, units=units, plans=plans, work=work
    )
    unpatched += copied.unpatched
    added = callers_units + copied.users
    units = units + added
    plans += [callers.CallerPlan() for _ in added]
    copies = copied.plans + [data_copies.CopyPlan() for _ in added]
    tags = ["" if len(units) == 1 else f"{i}_" for i in range(len(units))]
    sharing = shared.plan(units, tags)
    parts = []
    for i, (unit, plan, tag, uses, exports) in enumerate(
        zip(units, plans, tags, sharing.redirects, sharing.exports, strict=True)
    ):
        # Several files in one module: tags keep their global names apart.
        redirects = {fn: extract_new_name(fn, tags[at]) for fn, at in unit.carriers.items()}
        redirects.update(uses)  # new code another file of the fix adds
        # Carried objects other files use, and new global data they link to.
        shares = {d for u in units for d, at in u.carriers.items() if at == i} | exports
        try:
            parts.append(_extract_unit(unit, plan, tag, target, (redirects, shares)))
        except StaticKeyError as e:
            if unit.objname == "vmlinux":
                raise BuildError(f"{unit.pair.source}: {e.message}", hint=e.hint) from e
            if unit.carriers:  # a file added for callers: compiled otherwise already
                raise BuildError(f"{unit.pair.source}: {e.message}", hint=e.hint) from e
            again = units_mod.with_key_reads(exact_fix, target, unit, work, e)
            copies[i] = data_copies.plan_copies(again, target=target)
            again = data_copies.with_copies(again, copies[i])
            plan_again = units_mod.plan_unit(again, target=target, complete=req.complete)
            parts.append(_extract_unit(again, plan_again, tag, target, (redirects, shares)))
    redirects_ = _slot_redirects(parts, target)
    objects, runtime = _with_runtime(_klp_objects(parts), parts, copies, redirects_)
    build_id = target.build_id
    stub = module.stub_source(
        name, objects, {"suture_build_id": build_id, "description": req.description},
        runtime=runtime.source,
    )  # fmt: skip
    klp_syms = {k: v for p in parts for k, v in p.klp_syms.items()} | runtime.klp_symbols
    units_mod.progress("linking the live patch module")
    ko = module.link(
        target.image.headers_dir, work / "module", name=name,
        patch_objects=[p.patch.data for p in parts], stub=stub, klp_symbols=klp_syms,
        toolchain=target.tree.toolchain,
    )  # fmt: skip
    manifest = _manifest(
        req, name=name, release=target.release, build_id=build_id, parts=parts, ko=ko,
        unpatched=unpatched,
    )  # fmt: skip
    req.out_dir.mkdir(parents=True, exist_ok=True)
    out = req.out_dir / f"{name}.bundle"
    bundle.write(out, manifest, ko.read_bytes())
    shutil.copyfile(ko, req.out_dir / ko.name)
    return BuildReport(
        release=target.release,
        bundle=out,
        name=name,
        objects={o.name: [f.name for f in o.functions] for o in manifest.objects},
        new_functions=[n.name for p in parts for n in p.unit.diff.new],
        line_only=[f for p in parts for f in p.unit.diff.line_only],
        klp_symbols=sorted({s.name for s in klp_syms.values()}),
        carried=[c for p in parts for c in p.carried],
        unpatched=unpatched,
        data_copies=[d for c in copies for d in c.copied],
        slots=[f"{r.name} ({r.slot.section}) -> {r.old.name}" for _, r in redirects_],
        kept=sorted(
            {why for c in copies for why in c.pins}
            | ({patch_runtime.SLOT_PIN} if redirects_ else set())
        ),
    )


def _extract_unit(
    unit: units_mod.Unit,
    plan: callers.CallerPlan,
    tag: str,
    target: Target,
    links: tuple[dict[str, str], set[str]],
) -> _UnitPatch:
    """Extract and resolve one unit into its own patch object.

    ``links``: what the unit links to in other patch objects of the module (a
    name it uses -> their global), and its new data they link to.
    """
    redirects, exports = links
    orig, patched, diff, objname = unit.orig, unit.patched, unit.diff, unit.objname
    positions = same_names.in_target(unit.running or orig, objname, target)
    ksyms = target.symbols_of(objname)
    redirected = [c for c in diff.changed if c.has_fentry]
    redirected += [_caller_change(orig, caller, plan) for caller in plan.patched]
    inverse = {v: k for k, v in diff.renames.items()}
    functions = {inverse.get(c.name, c.name): c.name for c in diff.changed}
    functions.update({inverse.get(f, f): f for f in plan.carried + plan.patched})
    functions.update({n.name: n.name for n in diff.new})
    try:
        callbacks = _callbacks(patched)
    except BuildError as e:
        raise BuildError(f"{unit.pair.source}: {e.message}", hint=e.hint) from e
    functions.update({fn: fn for fn in callbacks.values()})
    what = sorted(functions.values()) + [f"{d} (data)" for d in sorted(diff.new_data)]
    units_mod.progress(f"extracting {', '.join(what)} from {unit.pair.source}")
    patch_obj = extract(
        patched, functions, renames=diff.renames, exported=target.exported,
        new_data=set(diff.new_data), objname=objname, tag=tag, redirects=redirects,
        shared_data=exports, objtool_at_link=target.objtool_at_link,
        kernel_strings=target.kernel_strings.find if objname == "vmlinux" else None,
    )  # fmt: skip
    units_mod.progress(
        f"resolving {len(patch_obj.klp_symbols)} symbols of {objname} "
        f"({'kallsyms of the build' if objname == 'vmlinux' else 'its module file'})"
    )
    klp_syms = {
        s: _klp_symbol(kname, objname, ksyms, positions.sympos, target)
        for s, kname in patch_obj.klp_symbols.items()
    }
    klp_funcs = [
        module.PatchedFunction(c.name, patch_obj.functions[c.name], positions.sympos(c.name))
        for c in redirected
    ]
    # The old code as the running kernel has it: what the patch checks before it redirects.
    running = unit.running or orig
    old_code = running.functions()
    expected = [
        _as_shipped(target, objname, f, prematch.expected(running, old_code[c.name], c.name))
        if c.name in old_code
        else None
        for c, f in zip(redirected, klp_funcs, strict=True)
    ]
    return _UnitPatch(
        unit, patch_obj, redirected, klp_funcs, klp_syms,
        {kind: patch_obj.functions[fn] for kind, fn in callbacks.items()}, plan.carried,
        plan.slots, expected,
    )  # fmt: skip


def _as_shipped(
    target: Target, objname: str, func: module.PatchedFunction, e: prematch.Expected
) -> prematch.Expected | None:
    """``e`` when the build ships exactly that code; None (not checked in the kernel) otherwise."""
    shipped = _shipped_code(target, objname, func.name, func.sympos, len(e.code))
    if shipped is not None and prematch.matches(e, shipped):
        return e
    units_mod.progress(
        f"pre-match: {objname}:{func.name} compiles to other bytes than the build ships "
        "(its layout follows its place in the linked code): not checked in the kernel"
    )
    return None


def _shipped_code(target: Target, objname: str, name: str, sympos: int, size: int) -> bytes | None:
    """``size`` bytes of the function as the build ships it: in the image, or the module file."""
    if objname == "vmlinux":
        ksyms = target.kallsyms
        found = ksyms.by_name.get(name, [])
        if not found or sympos > len(found):
            return None
        address = found[sympos - 1 if sympos else 0][0]
        index = target.image_index
        text = next((s.address for s in index.sections if s.name == ".text"), None)
        start = ksyms.by_name.get("_text", [])
        if text is not None and len(start) == 1:
            address += text - start[0][0]  # positions read with a KASLR slide
        return index.code(address, size)
    ko = target.module_file(objname)
    syms = [s for s in ko.symbols if s.name == name and s.type == SymType.FUNC and s.shndx]
    if not syms or sympos > len(syms):
        return None
    sym = syms[sympos - 1 if sympos else 0]
    home = ko.symbol_section(sym)
    if home is None:
        return None
    data = bytes(home.data[sym.value : sym.value + size])
    return data if len(data) == size else None


def _klp_symbol(
    name: str,
    objname: str,
    ksyms: symbols.Kallsyms,
    sympos: Callable[[str], int],
    target: Target,
) -> klp.KlpSymbol:
    """Where the livepatch core finds a symbol the patch of ``objname`` references.

    vmlinux code only references vmlinux. A module's code references its own
    symbols, and symbols other modules export to it: those are looked up in
    that module, which the loader has loaded before ours (a dependency). A
    module's code compiled with key reads may name an unexported vmlinux key:
    that relocation is applied with vmlinux, when the patch loads.
    """
    if objname == "vmlinux" and not ksyms.count(name):
        raise BuildError(
            f"the patched code of vmlinux uses {name}, which the build's vmlinux does not have",
            hint="the fix may use code another file of it adds: define that code in a "
            "changed file of the fix, not only declare it",
        )
    if objname == "vmlinux" or ksyms.count(name):
        return klp.KlpSymbol(objname, name, sympos(name))
    owner = target.export_owners.get(name)
    if owner is None and target.kallsyms.count(name) == 1:
        return klp.KlpSymbol("vmlinux", name, 0)
    if owner is None or owner in ("vmlinux", objname):
        raise BuildError(
            f"the patched code of {objname} uses {name}, which neither {objname} defines "
            "nor another module exports",
        )
    return klp.KlpSymbol(owner, name, 0, applied_with=objname)


def _with_runtime(
    objects: list[module.KlpObject],
    parts: list[_UnitPatch],
    copies: list[data_copies.CopyPlan],
    redirects: list[tuple[str, patch_runtime.SlotRedirect]],
) -> tuple[list[module.KlpObject], patch_runtime.Runtime]:
    """The run-time C of the patch (slots, hand-over, pins), wired into each ``klp_object``."""
    described = []
    for o in objects:
        mine = [r for objname, r in redirects if objname == o.name]
        pins = [w for p, c in zip(parts, copies, strict=True) if p.unit.objname == o.name
                for w in c.pins]  # fmt: skip
        described.append(patch_runtime.ObjectRuntime(o.name, mine, pins, o.callbacks))
    runtime = patch_runtime.runtime(described)
    wired = [dataclasses.replace(o, runtime_callbacks=runtime.callbacks[o.name]) for o in objects]
    return wired, runtime


def _slot_redirects(
    parts: list[_UnitPatch], target: Target
) -> list[tuple[str, patch_runtime.SlotRedirect]]:
    """The stored pointers to redirect, per patched object, each named for the livepatch core.

    A slot of vmlinux is checked against the image: at its address the image
    must hold the function's address, in memory the running kernel may write.
    """
    found: dict[tuple[str, str, int, int], patch_runtime.SlotRedirect] = {}
    for part in parts:
        objname, orig = part.unit.objname, part.unit.orig
        ksyms = target.symbols_of(objname)
        positions = same_names.in_target(part.unit.running or orig, objname, target)
        for slot, function in part.slots:
            try:
                owner = _slot_owner(slot, objname, ksyms, positions)
                old = klp.KlpSymbol(objname, function, positions.sympos(function))
            except BuildError as e:
                raise BuildError(
                    f"{part.unit.pair.source}: {function} is reached through "
                    f"{slot.describe()}, which cannot be named to the kernel: {e.message}"
                ) from e
            if objname == "vmlinux":
                _check_in_image(slot, owner, old, target)
            key = (objname, owner.name, owner.sympos, slot.offset)
            found.setdefault(
                key,
                patch_runtime.SlotRedirect(slot, owner, old, part.patch.functions[function]),
            )
    return [(key[0], r) for key, r in found.items()]


def _slot_owner(
    slot: slots.Slot, objname: str, ksyms: symbols.Kallsyms, positions: same_names.SameNames
) -> klp.KlpSymbol:
    """The klp symbol of the object holding a slot (by its address, when the image found it)."""
    if slot.address:
        entries = ksyms.by_name.get(slot.symbol, [])
        starts = [addr for addr, _ in entries]
        start = slot.address - slot.offset
        if start not in starts:
            raise BuildError(f"no symbol {slot.symbol} starts at {start:#x}")
        sympos = 0 if len(starts) == 1 else starts.index(start) + 1
        return klp.KlpSymbol(objname, slot.symbol, sympos)
    return klp.KlpSymbol(objname, slot.symbol, positions.sympos(slot.symbol))


def _check_in_image(
    slot: slots.Slot, owner: klp.KlpSymbol, old: klp.KlpSymbol, target: Target
) -> None:
    """Refuse a vmlinux slot unless the image holds the function there, in writable memory."""
    ksyms, index = target.kallsyms, target.image_index
    address = slot.address or ksyms.by_name[owner.name][max(owner.sympos, 1) - 1][0] + slot.offset
    function = ksyms.by_name[old.name][max(old.sympos, 1) - 1][0]
    home, area = index.home(address) or (slots.Home.READ_ONLY, "outside the image")
    placed = dataclasses.replace(slot, address=address, home=home, section=area)
    slots.refuse_slots([old.name], [placed] if placed.why_not() else [])
    held = index.bytes_at(address, slots.POINTER_SIZE)
    if held != function.to_bytes(slots.POINTER_SIZE, "little"):
        raise BuildError(
            f"{old.name} is reached through {slot.describe()}, but the kernel's image holds "
            f"{int.from_bytes(held or b'', 'little'):#x} there, not {function:#x}",
            hint="the build's image does not match its source: report it with the fix",
        )


def _klp_objects(parts: list[_UnitPatch]) -> list[module.KlpObject]:
    """One ``klp_object`` per patched object (vmlinux first), from all the files linked into it.

    vmlinux is always one, with no function if the fix patches only modules:
    its callbacks hand over the slots of the level this patch replaces (ADR 14).
    """
    names = sorted({"vmlinux"} | {p.unit.objname for p in parts}, key=lambda n: (n != "vmlinux", n))
    objects = []
    for objname in names:
        mine = [p for p in parts if p.unit.objname == objname]
        funcs = [f for p in mine for f in p.klp_funcs]
        seen: dict[tuple[str, int], str] = {}
        for p in mine:
            for f in p.klp_funcs:
                key = (f.name, f.sympos)
                if key in seen and seen[key] != p.unit.pair.source:
                    raise BuildError(
                        f"{f.name} of {objname} would be replaced from both {seen[key]} "
                        f"and {p.unit.pair.source}"
                    )
                seen[key] = p.unit.pair.source
        callbacks: dict[str, str] = {}
        for p in mine:
            for kind, sym in p.callbacks.items():
                if kind in callbacks:
                    raise BuildError(
                        f"the fix registers more than one {kind} callback for {objname}",
                        hint="register each kind of callback once per patched object "
                        "(vmlinux or a module): call the others from it",
                    )
                callbacks[kind] = sym
        expected = [e for p in mine for e in p.expected]
        objects.append(module.KlpObject(objname, funcs, callbacks, expected))
    return objects


def _caller_change(orig: ObjectFile, name: str, plan: callers.CallerPlan) -> FunctionChange:
    """An unchanged caller redirected so that it calls the carried copy of a changed function."""
    sec = orig.functions()[name]
    return FunctionChange(
        name, "caller", sec.name, sec.code_size, has_fentry=True,
        reason=f"calls {plan.paths[name]}, whose new code the patch carries",
    )  # fmt: skip


def _manifest(
    req: BuildRequest,
    *,
    name: str,
    release: str,
    build_id: str,
    parts: list[_UnitPatch],
    ko: Path,
    unpatched: list[str],
) -> bundle.Manifest:
    module_bytes = ko.read_bytes()
    objects: dict[str, list[bundle.Function]] = {}
    for part in parts:
        objects.setdefault(part.unit.objname, []).extend(
            bundle.Function(c.name, 0, c.size, e.sha256 if e else "")
            for c, e in zip(part.redirected, part.expected, strict=True)
        )
    order = sorted(objects, key=lambda n: (n != "vmlinux", n))  # as in the klp_patch
    return bundle.Manifest(
        name=name,
        release=release,
        build_id=build_id,
        level=req.level,
        module_file=ko.name,
        module_sha256=hashlib.sha256(module_bytes).hexdigest(),
        module_size=len(module_bytes),
        objects=tuple(bundle.PatchedObject(n, tuple(objects[n])) for n in order),
        cves=req.cves,
        description=req.description,
        fix_sha256=hashlib.sha256(req.fix.read_bytes()).hexdigest(),
        builder=f"suture {__version__}",
        created=timefmt.utc(),
        unpatched=tuple(unpatched),
        fixes=req.fixes,
    )
