"""``suture build FIX --package SRC[=VERSION]``: a userspace patch bundle for one library build.

::

    package row + version -> configured tree (cached) -> per touched file:
      compile original and patched with the package's own command (+ function sections)
      -> diff function by function (suture.builder.differ) -> refusals
      -> patch object of the changed and new functions (suture.builder.extract)
    -> the shipped library: each replaced function found and matched byte for byte,
       its old code hashed, every name the patch object uses placed -> bundle
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suture import __version__, timefmt
from suture.builder.differ import DiffResult, diff_objects
from suture.builder.elfobj import ObjectFile
from suture.builder.extract import extract, new_symbol_name
from suture.builder.fix import Fix
from suture.bundle import archive
from suture.bundle.manifest import Function, Manifest, PatchedObject, UserFunction
from suture.errors import NoChangeError, UserspaceBuildError
from suture.userspace import image
from suture.userspace.build import debian, locate
from suture.userspace.procfs import file_build_id

_EXTRA_FLAGS = ["-ffunction-sections", "-fdata-sections"]
_TLS_SECTIONS = (".tdata", ".tbss")


class _Everything(set[str]):
    """Every name counts as reachable by name: a shared library's places come from its file."""

    def __contains__(self, item: object) -> bool:
        return True


@dataclass(frozen=True)
class UserBuild:
    """What ``suture build --package`` made."""

    bundle: Path
    manifest: Manifest
    reproducible: list[str]  # functions whose rebuilt original matched the shipped bytes

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        m = self.manifest
        return {
            "bundle": str(self.bundle), "name": m.name, "kind": "userspace", "level": m.level,
            "package": m.package, "version": m.version, "library": m.release,
            "build_id": m.build_id, "cves": list(m.cves),
            "functions": [f.to_dict() for f in m.userspace_functions],
            "reproducible": self.reproducible,
        }  # fmt: skip


def build(
    fix_path: Path,
    spec: str,
    *,
    output: Path,
    name: str = "",
    cves: tuple[str, ...] = (),
    level: int = 1,
    log: Callable[[str], None] = print,
) -> UserBuild:
    """Build the userspace patch of ``fix_path`` for the package ``spec`` (SRC[=VERSION]).

    Raises:
        UserspaceBuildError: refused (data layout, TLS, IFUNC), not reproducible, a
            name without a place, a fix of several files or of headers.
        NoChangeError: the fix changes no code.
        DownloadError: the source cannot be fetched.
    """
    row, version = debian.package(spec)
    text = fix_path.read_text(errors="replace")
    fix = Fix.parse(text)
    _check_files(fix, row)
    source = fix.sources[0]
    tree, build_dir = debian.prepared_tree(row, version, log)
    with tempfile.TemporaryDirectory(prefix="suture-ubuild-") as tmp:
        orig_o, patched_o = _compile_pair(row, tree, build_dir, fix, source, Path(tmp))
        orig, patched = ObjectFile.load(orig_o), ObjectFile.load(patched_o)
    diff = diff_objects(orig, patched, fix.line_maps(source))
    _refuse(diff, orig, patched, source)
    names = [c.name for c in diff.changed] + [n.name for n in diff.new]
    obj = extract(
        patched, {n: n for n in names}, renames=diff.renames, exported=_Everything(),
        new_data=set(diff.new_data), objname=row.soname,
    )  # fmt: skip
    lib = locate.ShippedLibrary.open(row.library, _debug_file(row))
    functions, places, matched = _place(lib, orig, diff, obj.data)
    patch_name = name or _name(fix_path)
    build_id = file_build_id(row.library)
    manifest = Manifest(
        name=patch_name, release=row.soname, build_id=build_id, level=level,
        module_file=f"{patch_name}.o", module_sha256=hashlib.sha256(obj.data).hexdigest(),
        module_size=len(obj.data),
        objects=(PatchedObject(row.soname, tuple(
            Function(f.name, size=f.size, old_sha256=f.old_sha256) for f in functions)),),
        cves=cves or fix.cves, description=fix.description,
        fix_sha256=hashlib.sha256(text.encode()).hexdigest(), builder=f"suture {__version__}",
        created=timefmt.utc(), kind="userspace",
        package=row.source, version=version, userspace_functions=tuple(functions),
        userspace_symbols=places,
    )  # fmt: skip
    output.mkdir(parents=True, exist_ok=True)
    path = output / f"{patch_name}.bundle"
    archive.write(path, manifest, obj.data)
    return UserBuild(path, manifest, matched)


def _check_files(fix: Fix, row: debian.Package) -> None:
    if fix.headers or len(fix.sources) != 1:
        raise UserspaceBuildError(
            "a userspace fix must change exactly one C file (no headers) for now; "
            f"this one changes {', '.join(fix.files)}",
            reason="source",
        )
    if row.files and not fix.sources[0].startswith(row.files):
        raise UserspaceBuildError(
            f"{fix.sources[0]} is not built into {row.soname} (only {row.files}*)", reason="source"
        )


def _debug_file(row: debian.Package) -> Path | None:
    if row.dbg_dir is None:
        return None
    build_id = file_build_id(row.library)
    return row.dbg_dir / build_id[:2] / f"{build_id[2:]}.debug"


def _compile_pair(  # noqa: PLR0917 - the tree, its build and the fix, all needed
    row: debian.Package, tree: Path, build_dir: Path, fix: Fix, source: str, tmp: Path
) -> tuple[Path, Path]:
    """Compile ``source`` as the package does, before and after the fix (the tree is restored)."""
    cwd, argv, target = debian.compile_command(row, build_dir, source)
    outputs = []
    path = tree / source
    aside = path.with_name(path.name + ".suture-orig")
    for side in ("orig", "patched"):
        out = tmp / f"{side}.o"
        cmd = _retarget(argv, target, out, tmp / f"{side}.d")
        if side == "patched":
            shutil.copy2(path, aside)
            diff = "".join(fd.text for c in fix.commits for fd in c.files if fd.path == source)
            proc = subprocess.run(["patch", "-p1", "-s", "-F0", "--no-backup-if-mismatch"],
                                  cwd=tree, input=diff, text=True, capture_output=True,
                                  check=False)  # fmt: skip
            if proc.returncode != 0:
                aside.replace(path)
                raise UserspaceBuildError(
                    f"the fix does not apply to {source} of {row.source}: {proc.stdout.strip()}",
                    reason="source",
                )
        try:
            proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
        finally:
            if side == "patched":
                aside.replace(path)
        if proc.returncode != 0:
            raise UserspaceBuildError(
                f"compiling {source} ({side}) failed: {proc.stderr.strip()[-1500:]}",
                reason="source",
            )
        outputs.append(out)
    return outputs[0], outputs[1]


def _retarget(argv: list[str], target: str, out: Path, dep: Path) -> list[str]:
    """The package's compile command, writing to ``out``, with one section per function."""
    cmd = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "-o" and i + 1 < len(argv):
            cmd += ["-o", str(out)]
            skip = True
        elif arg in ("-MF", "-MT") and i + 1 < len(argv):
            cmd += [arg, str(dep) if arg == "-MF" else target]
            skip = True
        else:
            cmd.append(arg)
    return cmd[:1] + _EXTRA_FLAGS + cmd[1:]


def _refuse(diff: DiffResult, orig: ObjectFile, patched: ObjectFile, source: str) -> None:
    """Refuse what a function-level patch of a running process cannot carry."""
    if diff.no_change and not diff.new:
        raise NoChangeError(f"the fix changes no code in {source}")
    if diff.changed_data:
        raise UserspaceBuildError(
            f"the fix changes data that running code shares: {', '.join(diff.changed_data)}",
            reason="data-layout",
            hint="a live patch replaces functions; existing data keeps its layout in memory",
        )
    for obj in (orig, patched):
        tls = [s.name for s in obj.sections if s.name.startswith(_TLS_SECTIONS) and s.data]
        if obj is patched and len(tls) != len(
            [s for s in orig.sections if s.name.startswith(_TLS_SECTIONS)]
        ):
            raise UserspaceBuildError(
                "the fix changes thread-local storage (a new __thread variable)", reason="tls",
                hint="threads already running have no room for it",
            )  # fmt: skip
    ifuncs = {s.name for s in orig.symbols if s.type == -1 and s.name} & {
        c.name for c in diff.changed
    }
    if ifuncs:
        raise UserspaceBuildError(
            f"the fix changes IFUNC resolvers: {', '.join(sorted(ifuncs))}", reason="ifunc",
            hint="their result is already in every process's GOT",
        )  # fmt: skip


def _place(
    lib: locate.ShippedLibrary, orig: ObjectFile, diff: DiffResult, patch_object: bytes
) -> tuple[list[UserFunction], dict[str, tuple[str, int]], list[str]]:
    """Each replaced function's place and old hash, and the place of every name used."""
    funcs = orig.functions()
    functions = []
    found: dict[str, tuple[str, int]] = {}
    matched = []
    for change in diff.changed:
        if change.name in lib.ifuncs:
            raise UserspaceBuildError(f"{change.name} is an IFUNC symbol", reason="ifunc")
        sec = funcs[change.name]
        vaddr = locate.locate(lib, orig, change.name, sec)
        matched.append(change.name)
        functions.append(UserFunction(
            change.name, vaddr, len(sec.data), locate.old_hash(lib, vaddr, len(sec.data)),
            new_symbol_name(change.name),
        ))  # fmt: skip
        found.update(locate.harvest(lib, orig, vaddr, sec))
    needed = _undefined(patch_object)
    for name in needed:
        if name in found:
            continue
        same_file = funcs.get(name)
        if same_file is not None:  # an unchanged function of the same file
            vaddr = locate.locate(lib, orig, name, same_file)
            found[name] = ("addr", vaddr)
            matched.append(name)
        elif name in lib.got_slots:
            found[name] = ("got", lib.got_slots[name])
        elif len(lib.symbols.get(name, [])) == 1:
            found[name] = ("addr", lib.symbols[name][0][0])
    missing = sorted(n for n in needed if n not in found)
    if missing:
        raise UserspaceBuildError(
            f"no place in the library for {', '.join(missing)}", reason="symbol",
            hint="the patched code uses something the shipped library does not have",
        )  # fmt: skip
    return functions, {n: found[n] for n in needed}, matched


def _undefined(data: bytes) -> list[str]:
    obj = image.PatchObject.parse(data)
    return sorted({n for n, _i, shndx, _v, _s in obj.symbols[1:] if shndx == 0 and n})


def _name(fix_path: Path) -> str:
    stem = re.sub(r"[^a-z0-9_]", "_", fix_path.stem.lower())
    return (stem.strip("_") or "fix")[:55]
