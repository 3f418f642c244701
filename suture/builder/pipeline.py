"""``suture build``: a source fix in, a bundle for one exact kernel build out.

source (prepared once per build) -> compile the touched units twice ->
diff -> refuse what cannot be patched safely -> patch the callers of changed
functions without an ftrace entry (callers.py; the units they add, units.py)
-> extract the changed code -> link a livepatch module with kbuild -> klp
relocations -> bundle.

A fix may change several files, of vmlinux and of modules. Each changed file
is planned and extracted on its own into a patch object (its locals stay its
own; its references to unexported symbols are named apart and resolved
against the object it is linked into); kbuild links them all into the one
module, which has one ``klp_object`` per patched object.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from suture import __version__, bundle
from suture.builder import callers, klp, module, same_names, shared, symbols
from suture.builder import units as units_mod
from suture.builder.compile import ObjectPair, compile_pair
from suture.builder.differ import FunctionChange, diff_objects
from suture.builder.elfobj import ObjectFile, Rela, RelocType, Section, SymType
from suture.builder.extract import PatchObject, extract
from suture.builder.extract import new_symbol_name as extract_new_name
from suture.builder.fix import Fix
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


def _old_sha256(sec: Section) -> str:
    data = bytearray(sec.data)
    for r in sec.relas:
        width = 8 if r.type in (RelocType.R_64, RelocType.PC64) else 4
        data[r.offset : r.offset + width] = bytes(width)
    return hashlib.sha256(data).hexdigest()


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


def build(req: BuildRequest, positions: SymbolPositions) -> BuildReport:
    """Run the whole build; ``positions`` reads where the build's symbols are (the lab).

    Raises:
        BuildError: the fix cannot be built or is refused (NoChangeError: nothing to patch).
    """
    fix = Fix.parse(req.fix.read_text(errors="replace"))
    name = req.name or default_name(req.fix)
    units_mod.progress(f"preparing the build {req.release or '(current)'} (once per build)")
    target = open_target(req.release, positions)
    image, tree = target.image, target.tree
    with tempfile.TemporaryDirectory(prefix="suture-build-") as tmp:
        work = Path(tmp)
        units_mod.progress(f"compiling {', '.join(sorted(fix.files))} before and after the fix")
        pairs = compile_pair(tree, req.fix, work / "objects")
        units, absent = [], []
        for pair in pairs:
            orig, patched = ObjectFile.load(pair.original), ObjectFile.load(pair.patched)
            objname = _objname(target, pair)
            if not _in_build(target, objname, orig):
                absent.append(pair.source)
                continue
            diff = diff_objects(orig, patched, fix.files[pair.source])
            units_mod.refuse_unpatchable(pair, diff)
            if diff.changed or diff.new:  # a unit that changes nothing is left out
                units.append(units_mod.Unit(pair, orig, patched, diff, objname))
        if not units:
            why = (
                f"its configuration does not build {', '.join(absent)} into it"
                if absent
                else "the objects it touches compile the same"
            )
            raise NoChangeError(f"the fix changes no code in {image.release}: {why}")
        return _generate(req, name=name, target=target, units=units, work=work)


def _generate(
    req: BuildRequest,
    *,
    name: str,
    target: Target,
    units: list[units_mod.Unit],
    work: Path,
) -> BuildReport:
    plans = [units_mod.plan_unit(u, target=target, complete=req.complete) for u in units]
    callers_units, unpatched = units_mod.outside_callers(
        req.fix, complete=req.complete, target=target, units=units, plans=plans, work=work
    )
    units = units + callers_units
    plans += [callers.CallerPlan() for _ in callers_units]
    tags = ["" if len(units) == 1 else f"{i}_" for i in range(len(units))]
    sharing = shared.plan(units, tags)
    parts = []
    for unit, plan, tag, uses, exports in zip(
        units, plans, tags, sharing.redirects, sharing.exports, strict=True
    ):
        # Several files in one module: tags keep their global names apart.
        redirects = {fn: extract_new_name(fn, tags[i]) for fn, i in unit.carriers.items()}
        redirects.update(uses)  # new code another file of the fix adds
        try:
            parts.append(_extract_unit(unit, plan, tag, target, (redirects, exports)))
        except StaticKeyError as e:
            if unit.objname == "vmlinux":
                raise BuildError(f"{unit.pair.source}: {e.message}", hint=e.hint) from e
            if unit.carriers:  # a file added for callers: compiled otherwise already
                raise BuildError(f"{unit.pair.source}: {e.message}", hint=e.hint) from e
            again = units_mod.with_key_reads(req.fix, target, unit, work, e)
            plan_again = units_mod.plan_unit(again, target=target, complete=req.complete)
            parts.append(_extract_unit(again, plan_again, tag, target, (redirects, exports)))
    objects = _klp_objects(parts)
    build_id = target.build_id
    stub = module.stub_source(
        name, objects, {"suture_build_id": build_id, "description": req.description}
    )
    klp_syms = {k: v for p in parts for k, v in p.klp_syms.items()}
    units_mod.progress("linking the live patch module")
    ko = module.link(
        target.image.headers_dir, work / "module", name=name,
        patch_objects=[p.patch.data for p in parts], stub=stub, klp_symbols=klp_syms,
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
    units_mod.progress(
        f"extracting {', '.join(sorted(functions.values()))} from {unit.pair.source}"
    )
    patch_obj = extract(
        patched, functions, renames=diff.renames, exported=target.exported,
        new_data=set(diff.new_data), objname=objname, tag=tag, redirects=redirects,
        exports=exports,
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
    return _UnitPatch(
        unit, patch_obj, redirected, klp_funcs, klp_syms,
        {kind: patch_obj.functions[fn] for kind, fn in callbacks.items()}, plan.carried,
    )  # fmt: skip


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


def _klp_objects(parts: list[_UnitPatch]) -> list[module.KlpObject]:
    """One ``klp_object`` per patched object (vmlinux first), from all the files linked into it."""
    names = sorted({p.unit.objname for p in parts}, key=lambda n: (n != "vmlinux", n))
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
        objects.append(module.KlpObject(objname, funcs, callbacks))
    return objects


def _caller_change(orig: ObjectFile, name: str, plan: callers.CallerPlan) -> FunctionChange:
    """An unchanged caller redirected so that it calls the carried copy of a changed function."""
    sec = orig.functions()[name]
    return FunctionChange(
        name, "caller", sec.name, len(sec.data), has_fentry=True,
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
        funcs = (part.unit.running or part.unit.orig).functions()
        objects.setdefault(part.unit.objname, []).extend(
            bundle.Function(
                c.name, 0, c.size, _old_sha256(funcs[c.name]) if c.name in funcs else ""
            )
            for c in part.redirected
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
        created=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        unpatched=tuple(unpatched),
    )
