"""``suture build``: a source fix in, a bundle for one exact kernel build out.

source (prepared once per build) -> compile the touched units twice ->
diff -> refuse what cannot be patched safely -> patch the callers of changed
functions without an ftrace entry (callers.py) -> extract the changed code ->
link a livepatch module with kbuild -> klp relocations -> bundle.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from suture import __version__, bundle
from suture.build import callers, module, source, symbols
from suture.build.compile import ObjectPair, compile_pair
from suture.build.differ import DiffResult, FunctionChange, diff_objects
from suture.build.elfobj import ObjectFile, Rela, RelocType, Section, SymType
from suture.build.extract import extract
from suture.build.fix import Fix
from suture.build.image_refs import ImageIndex
from suture.errors import BuildError, NoChangeError
from suture.kernel.identity import parse_build_id
from suture.kernel.modinfo import section_data
from suture.lab import kernels, vmlinux


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
        }


def _progress(text: str) -> None:
    print(f"suture: {text}", file=sys.stderr)


def default_name(fix: Path) -> str:
    """A module name from the fix's file name: ``007-fs-x.patch`` -> ``suture_007_fs_x``."""
    stem = re.sub(r"[^a-z0-9_]", "_", fix.name.lower().removesuffix(".patch").removesuffix(".diff"))
    return ("suture_" + stem)[:55].rstrip("_")


def _objname(tree: source.SourceTree, pair: ObjectPair) -> str:
    """``vmlinux``, or the module a unit is linked into (read from kbuild's .cmd file)."""
    cmd = tree.path / Path(pair.source).parent / f".{Path(pair.source).stem}.o.cmd"
    text = cmd.read_text(errors="replace") if cmd.exists() else ""
    if "-DMODULE" not in text:
        return "vmlinux"
    match = re.search(r"-DKBUILD_MODNAME='\"(\w+)\"'", text)
    if match is None:
        raise BuildError(f"cannot tell which module {pair.source} belongs to")
    return match.group(1)


def _refuse(pair: ObjectPair, diff: DiffResult) -> None:
    if diff.unpatchable:
        what, why = diff.unpatchable[0]
        raise BuildError(f"{pair.source}: {what} changed, but {why}")
    if diff.changed_data:
        raise BuildError(
            f"{pair.source}: the fix changes existing data ({', '.join(diff.changed_data)}); "
            "a live patch cannot change data the running kernel already uses",
            hint="keep the data as it is and attach new state with shadow variables "
            "(klp_shadow_*), or set it up in a pre-patch callback",
        )


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


def _build_id(tree: kernels.KernelTree) -> str:
    image = vmlinux.ensure(tree.vmlinuz, tree.vmlinux)
    return parse_build_id(section_data(image.read_bytes(), b".notes") or b"")


def build(req: BuildRequest) -> BuildReport:
    """Run the whole build. Raises :class:`BuildError` (or :class:`NoChangeError`)."""
    fix = Fix.parse(req.fix.read_text(errors="replace"))
    name = req.name or default_name(req.fix)
    image = kernels.fetch(req.release)
    _progress(f"preparing the source of {image.release} (once per build)")
    tree = source.prepare(image.release)
    with tempfile.TemporaryDirectory(prefix="suture-build-") as tmp:
        work = Path(tmp)
        _progress(f"compiling {', '.join(sorted(fix.files))} before and after the fix")
        pairs = compile_pair(tree, req.fix, work / "objects")
        diffs = []
        for pair in pairs:
            orig, patched = ObjectFile.load(pair.original), ObjectFile.load(pair.patched)
            diff = diff_objects(orig, patched, fix.files[pair.source])
            _refuse(pair, diff)
            diffs.append((pair, orig, patched, diff))
        changed = [d for d in diffs if d[3].changed or d[3].new]
        if not changed:
            raise NoChangeError(
                f"the fix changes no code in {image.release}: the objects it touches compile "
                "the same (or this configuration does not build the changed code)",
            )
        if len(changed) > 1:
            raise BuildError("fixes that change code in several files are not supported yet")
        pair, orig, patched, diff = changed[0]
        return _generate(
            req, name=name, image=image, tree=tree, unit=(pair, orig, patched, diff), work=work
        )


def _generate(
    req: BuildRequest,
    *,
    name: str,
    image: kernels.KernelTree,
    tree: source.SourceTree,
    unit: tuple[ObjectPair, ObjectFile, ObjectFile, DiffResult],
    work: Path,
) -> BuildReport:
    pair, orig, patched, diff = unit
    objname = _objname(tree, pair)
    ksyms = (
        symbols.kallsyms(image.release)
        if objname == "vmlinux"
        else symbols.module_symbols(image, objname)
    )
    # Names the original object defines: anchors that tell same-named locals apart.
    local_names = [s.name for s in orig.symbols if s.shndx and s.name and s.type in (1, 2)]
    plan = _plan_callers(unit, objname=objname, image=image, ksyms=ksyms, local_names=local_names)
    redirected = [c for c in diff.changed if c.has_fentry]
    redirected += [_caller_change(orig, caller, plan) for caller in plan.patched]
    inverse = {v: k for k, v in diff.renames.items()}
    functions = {inverse.get(c.name, c.name): c.name for c in diff.changed}
    functions.update({inverse.get(f, f): f for f in plan.carried + plan.patched})
    functions.update({n.name: n.name for n in diff.new})
    callbacks = _callbacks(patched)
    functions.update({fn: fn for fn in callbacks.values()})
    _progress(f"extracting {', '.join(sorted(functions.values()))}")
    patch_obj = extract(
        patched,
        functions,
        renames=diff.renames,
        exported=symbols.exported(image),
        new_data=set(diff.new_data),
        objname=objname,
    )
    _progress(f"resolving {len(patch_obj.klp_symbols)} kernel symbols (kallsyms of the build)")
    klp_syms = {s: ksyms.sympos(s, local_names) for s in patch_obj.klp_symbols}
    klp_funcs = [
        module.PatchedFunction(
            c.name, patch_obj.functions[c.name], ksyms.sympos(c.name, local_names)
        )
        for c in redirected
    ]
    build_id = _build_id(image)
    stub = module.stub_source(
        name,
        None if objname == "vmlinux" else objname,
        klp_funcs,
        {"suture_build_id": build_id, "description": req.description},
        {kind: patch_obj.functions[fn] for kind, fn in callbacks.items()},
    )
    _progress("linking the live patch module")
    ko = module.link(
        image.headers_dir, work / "module", name=name, patch_object=patch_obj.data, stub=stub,
        klp_symbols=klp_syms, objname=objname,
    )  # fmt: skip
    manifest = _manifest(
        req, name=name, release=image.release, build_id=build_id, orig=orig,
        changed=redirected, ko=ko, objname=objname,
    )  # fmt: skip
    req.out_dir.mkdir(parents=True, exist_ok=True)
    out = req.out_dir / f"{name}.bundle"
    bundle.write(out, manifest, ko.read_bytes())
    shutil.copyfile(ko, req.out_dir / ko.name)
    return BuildReport(
        release=image.release,
        bundle=out,
        name=name,
        objects={objname: [c.name for c in redirected]},
        new_functions=[n.name for n in diff.new],
        line_only=diff.line_only,
        klp_symbols=sorted(klp_syms),
        carried=plan.carried,
    )


def _plan_callers(
    unit: tuple[ObjectPair, ObjectFile, ObjectFile, DiffResult],
    *,
    objname: str,
    image: kernels.KernelTree,
    ksyms: symbols.Kallsyms,
    local_names: list[str],
) -> callers.CallerPlan:
    """Changed functions without an ftrace entry: which to carry, which callers to patch."""
    pair, orig, patched, diff = unit
    no_fentry = [c.name for c in diff.changed if not c.has_fentry]
    if not no_fentry:
        return callers.CallerPlan()
    outside = _outside_refs(objname, image, ksyms, local_names, orig)
    try:
        plan = callers.plan_callers(
            orig, patched, no_fentry, fixed={c.name for c in diff.changed if c.has_fentry},
            vmlinux=objname == "vmlinux", outside=outside, renames=diff.renames,
        )  # fmt: skip
    except BuildError as e:
        raise BuildError(f"{pair.source}: {e.message}", hint=e.hint) from e
    _progress(
        f"no ftrace entry in {', '.join(no_fentry)}: carrying {', '.join(plan.carried)}, "
        f"patching {', '.join(plan.patched) or 'no other function'}"
    )
    return plan


def _outside_refs(
    objname: str,
    image: kernels.KernelTree,
    ksyms: symbols.Kallsyms,
    local_names: list[str],
    orig: ObjectFile,
) -> callers.OutsideRefs:
    """References to a global function from the rest of vmlinux (read from its image)."""

    def unknown(_name: str) -> list[callers.Reference] | None:
        return None  # a module's other files are not searched

    if objname != "vmlinux":
        return unknown
    index = ImageIndex.load(vmlinux.ensure(image.vmlinuz, image.vmlinux), ksyms)
    own = {a for n in orig.functions() if (a := _address(ksyms, n, local_names)) is not None}

    def outside(name: str) -> list[callers.Reference] | None:
        address = _address(ksyms, name, local_names)
        return None if address is None else index.references(address, own)

    return outside


def _address(ksyms: symbols.Kallsyms, name: str, local_names: list[str]) -> int | None:
    """The running kernel's address of a function of the patched file, or None if unsure."""
    entries = ksyms.by_name.get(name, [])
    try:
        pos = ksyms.sympos(name, local_names)
    except BuildError:
        return None
    return entries[max(pos, 1) - 1][0] if entries else None


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
    orig: ObjectFile,
    changed: list[FunctionChange],
    ko: Path,
    objname: str,
) -> bundle.Manifest:
    funcs = orig.functions()
    module_bytes = ko.read_bytes()
    return bundle.Manifest(
        name=name,
        release=release,
        build_id=build_id,
        level=req.level,
        module_file=ko.name,
        module_sha256=hashlib.sha256(module_bytes).hexdigest(),
        module_size=len(module_bytes),
        objects=(
            bundle.PatchedObject(
                objname,
                tuple(
                    bundle.Function(
                        c.name, 0, c.size, _old_sha256(funcs[c.name]) if c.name in funcs else ""
                    )
                    for c in changed
                ),
            ),
        ),
        cves=req.cves,
        description=req.description,
        fix_sha256=hashlib.sha256(req.fix.read_bytes()).hexdigest(),
        builder=f"suture {__version__}",
        created=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
